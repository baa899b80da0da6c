#!/usr/bin/env bash
# `vmctl app deploy` (issue 13), printed as a Markdown table for BENCHMARKS.md. Measured in one
# run on one machine (TCG); numbers from different machines don't compare.
#
#   scripts/bench-app.sh             # N=3 deploys each way
#   BENCH_N=5 scripts/bench-app.sh
#
# A debian-12 VM serves a small WSGI app ([app], gunicorn behind nginx, 2 workers) while curl
# asks for its page about 20 times a second. Each run ships a new version and times, from the start of the
# command: its return, and the first answer of the new version; and counts the requests that
# failed (no answer, or not 200) meanwhile. Two ways:
#   a. vmctl app deploy (release over SSH, gunicorn reloaded with SIGHUP)
#   b. the same release copied in, then `systemctl restart vmctl-app` (what a restart costs)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-3}

scripts/install-deps.sh >/dev/null
cargo build --release --locked -q
V=$PWD/target/release/vmctl
work=$(mktemp -d /tmp/vmctl-bench-app.XXXXXX)
chmod 0711 "$work"
export VMCTL_HOME=$work/home
export VMCTL_CACHE_DIR=${VMCTL_CACHE_DIR:-$PWD/target/vmctl-test/cache}
mkdir -p "$VMCTL_CACHE_DIR"
client_pid=
cleanup() {
	[[ -n $client_pid ]] && kill "$client_pid" 2>/dev/null || true
	"$V" kill app >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
"$V" image build debian-12 >/dev/null 2>&1

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) / 1e9}'; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
write_app() {
	mkdir -p "$1"
	cat >"$1/app.py" <<EOF
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"$2\n"]
EOF
}
# Ask about 20 times a second until $work/stop exists: one "CODE BODY" line per request (a
# steady client, as a site's visitors are, rather than one that takes the host's CPU from TCG).
client() {
	while [[ ! -e $work/stop ]]; do
		local out
		out=$(curl -s -m 10 -w '\n%{http_code}' "http://127.0.0.1:$1/") || out=$'-\n000'
		printf '%s %s\n' "${out##*$'\n'}" "$(tr -d '\n' <<<"${out%$'\n'*}")"
		sleep 0.05
	done >"$2"
}
# Wait until the page says $2; when that was.
first_answer() {
	until [[ $(curl -s -m 10 "http://127.0.0.1:$1/") == "$2" ]]; do sleep 0.05; done
	now
}

ph=$(free_port) ps=$(free_port)
write_app "$work/src" v0
cat >"$work/app.toml" <<EOF
image = "debian-12"
memory = "1G"
ports = ["$ps:22", "$ph:8080"]
[app]
dir = "./src"
proxy = "nginx"
workers = 2
EOF
"$V" create app --from "$work/app.toml" >/dev/null
"$V" start app --wait --timeout 600 >/dev/null

declare -A took first failed sent
run() { # $1 way, $2 version
	local out=$work/$1-$2.log t0 t1 t2
	write_app "$work/src" "$2"
	rm -f "$work/stop"
	client "$ph" "$out" &
	client_pid=$!
	sleep 2 # the client has been answered by the old version a few times
	t0=$(now)
	case $1 in
	deploy) "$V" app deploy app >/dev/null ;;
	restart)
		"$V" cp "$work/src/app.py" app:/tmp/app.py >/dev/null
		"$V" ssh app -- "sudo cp /tmp/app.py \$(readlink -f /srv/vmctl-app/current)/app/app.py && sudo systemctl restart vmctl-app" >/dev/null
		;;
	esac
	t1=$(now)
	t2=$(first_answer "$ph" "$2")
	sleep 2
	touch "$work/stop"
	wait "$client_pid"
	client_pid=
	took[$1]+="$(secs "$t0" "$t1") "
	first[$1]+="$(secs "$t0" "$t2") "
	local bad n
	n=$(wc -l <"$out")
	bad=$(grep -vc '^200 ' "$out" || true)
	failed[$1]=$((${failed[$1]:-0} + bad))
	sent[$1]=$((${sent[$1]:-0} + n))
	echo "  $1 $2: returned after $(secs "$t0" "$t1") s, first $2 answer after $(secs "$t0" "$t2") s, $bad of $n requests failed" >&2
}
echo "== $N runs each" >&2
for i in $(seq "$N"); do
	run deploy "d$i"
	run restart "r$i"
done
"$V" stop app >/dev/null

echo
echo "| way | command returns (s, median of $N) | first answer of the new version (s, median of $N) | failed requests (of all sent) |"
echo "|---|---|---|---|"
for w in deploy restart; do
	label="vmctl app deploy (SIGHUP reload)"
	[[ $w == restart ]] && label="copy + systemctl restart vmctl-app"
	echo "| $label | $(printf '%s\n' ${took[$w]} | median) | $(printf '%s\n' ${first[$w]} | median) | ${failed[$w]} of ${sent[$w]} |"
done
