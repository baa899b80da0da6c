#!/usr/bin/env bash
# vmctl benchmarks (issue 2's targets), printed as a Markdown table for BENCHMARKS.md.
# Ratios are measured in one run on one machine; numbers from different machines don't compare.
#
#   scripts/bench.sh                 # all benchmarks, N=5 boots per side
#   BENCH_N=9 scripts/bench.sh
#
# 1. create --disk 10G vs --disk 1T: time (median of 10) and file size   (goal < 100 ms, < 1 MiB)
# 2. tiny guest start --wait vs the same argv run by hand and polled     (goal: vmctl adds < 5 %)
# 3. stop: time beyond the guest's own poweroff (plain QMP system_powerdown → exit)  (< 200 ms)
# 4. list --json with 8 running tiny VMs                                  (goal < 100 ms)
# 5. vmctl's peak RSS (create, start --wait, status, list, stop; and the supervisor)  (< 10 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-5}

scripts/install-deps.sh >/dev/null
command -v socat >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q socat >/dev/null
cargo build --release --locked -q
V=$PWD/target/release/vmctl
work=$(mktemp -d /tmp/vmctl-bench.XXXXXX)
# Run as root, QEMU runs as vmctl-qemu and must pass through to the home's images.
chmod 0711 "$work"
export VMCTL_HOME=$work/home
export VMCTL_CACHE_DIR=${VMCTL_CACHE_DIR:-$PWD/target/vmctl-test/cache}
mkdir -p "$VMCTL_CACHE_DIR"
cleanup() {
	for vm in $("$V" list --json 2>/dev/null | sed -n 's/^    "name": "\(.*\)",$/\1/p'); do
		"$V" kill "$vm" >/dev/null 2>&1 || true
	done
	[[ -n ${plain_pid:-} ]] && kill -9 "$plain_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
"$V" image build tiny >/dev/null 2>&1

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%d", m}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Wait until GET / through the port returns the guest's page, by the same rule and method vmctl
# --wait uses: a reply from the guest (not just a host-side connect), with a new attempt every
# 50 ms while earlier ones may still hang on a guest that is not up yet.
wait_http() {
	python3 - "$1" <<'PY'
import sys, threading, time, urllib.request
port, done = int(sys.argv[1]), threading.Event()
def attempt():
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3).read()
        done.set()
    except Exception:
        pass
while not done.is_set():
    threading.Thread(target=attempt, daemon=True).start()
    done.wait(0.05)
PY
}

rows=()
row() { rows+=("| $1 | $2 | $3 |"); echo "  $1: $2 (goal $3)" >&2; }

echo "== 1. create" >&2
for size in 10G 1T; do
	ts=()
	for i in $(seq 10); do
		t0=$(now); "$V" create "c$size-$i" --disk "$size" >/dev/null; t1=$(now)
		ts+=("$(ms "$t0" "$t1")")
	done
	bytes=$(stat -c %s "$VMCTL_HOME/vms/c$size-1/disk.qcow2")
	row "create --disk $size" "$(printf '%s\n' "${ts[@]}" | median) ms, disk file $((bytes / 1024)) KiB" "< 100 ms, < 1 MiB"
	for i in $(seq 10); do "$V" rm "c$size-$i" >/dev/null; done
done

echo "== 2. start --wait vs plain qemu ($N each, alternating)" >&2
port=$(free_port)
"$V" create boot --mem 256M --disk 1G --port "$port:8080" >/dev/null
"$V" start boot --wait >/dev/null   # warm the KVM verdict cache and the page cache
"$V" stop boot >/dev/null
mapfile -t argv < <("$V" show-cmd boot | python3 -c 'import shlex,sys; print("\n".join(shlex.split(sys.stdin.read())))')
plain_dir=$work/plain; mkdir -p "$plain_dir"
# The same argv, but with its own sockets/pidfile/log so it runs outside vmctl.
plain=()
for a in "${argv[@]}"; do plain+=("${a//$VMCTL_HOME\/vms\/boot\/run/$plain_dir}"); done
vm_ts=(); plain_ts=()
for i in $(seq "$N"); do
	t0=$(now); "$V" start boot --wait >/dev/null; t1=$(now)
	vm_ts+=("$(ms "$t0" "$t1")")
	"$V" stop boot >/dev/null
	t0=$(now)
	"${plain[@]}" >/dev/null 2>&1 &
	plain_pid=$!
	wait_http "$port"; t1=$(now)
	plain_ts+=("$(ms "$t0" "$t1")")
	kill -9 "$plain_pid"; wait "$plain_pid" 2>/dev/null || true; plain_pid=
	rm -f "$plain_dir"/*
done
vm_med=$(printf '%s\n' "${vm_ts[@]}" | median)
plain_med=$(printf '%s\n' "${plain_ts[@]}" | median)
row "tiny guest to HTTP: vmctl start --wait" "$vm_med ms (runs: ${vm_ts[*]})" "-"
row "tiny guest to HTTP: plain qemu, same argv" "$plain_med ms (runs: ${plain_ts[*]})" "-"
row "vmctl overhead on boot" "$(awk -v a="$vm_med" -v b="$plain_med" 'BEGIN {printf "%+.1f %%", (a-b)*100/b}')" "< 5 %"

echo "== 3. stop latency beyond the guest's poweroff ($N each)" >&2
stop_ts=(); base_ts=()
for i in $(seq "$N"); do
	"$V" start boot --wait >/dev/null
	t0=$(now); "$V" stop boot >/dev/null; t1=$(now)
	stop_ts+=("$(ms "$t0" "$t1")")
	"${plain[@]}" >/dev/null 2>&1 &
	plain_pid=$!
	wait_http "$port"
	sock=$(ls "$plain_dir"/qmp-ctl.sock)
	t0=$(now)
	printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"system_powerdown"}' | socat -t 30 - "UNIX-CONNECT:$sock" >/dev/null
	wait "$plain_pid" 2>/dev/null || true; t1=$(now); plain_pid=
	base_ts+=("$(ms "$t0" "$t1")")
	rm -f "$plain_dir"/*
done
stop_med=$(printf '%s\n' "${stop_ts[@]}" | median)
base_med=$(printf '%s\n' "${base_ts[@]}" | median)
row "vmctl stop (booted guest)" "$stop_med ms (runs: ${stop_ts[*]})" "-"
row "guest's own poweroff (QMP system_powerdown → QEMU exit)" "$base_med ms (runs: ${base_ts[*]})" "-"
row "stop overhead beyond the guest's poweroff" "$((stop_med - base_med)) ms" "< 200 ms"

echo "== 4. list --json with 8 running VMs" >&2
for i in $(seq 8); do "$V" create "l$i" --mem 128M --disk 1G >/dev/null; "$V" start "l$i" >/dev/null; done
ts=()
for i in $(seq 20); do t0=$(now); "$V" list --json >/dev/null; t1=$(now); ts+=("$(ms "$t0" "$t1")"); done
running=$("$V" list --json | grep -c '"state": "running"')
row "list --json, $running running VMs" "$(printf '%s\n' "${ts[@]}" | median) ms" "< 100 ms"

echo "== 5. peak RSS (vmctl's own VmHWM; QEMU and qemu-img children not counted)" >&2
peak=0; detail=()
for cmd in "list --json" "status l1 --json" "create r1 --disk 10G" "start boot --wait" "stop boot" "doctor --json"; do
	# shellcheck disable=SC2086
	k=$(VMCTL_REPORT_RSS=1 "$V" $cmd 2>&1 >/dev/null | sed -n 's/^vmctl-peak-rss: \([0-9]*\) kB$/\1/p')
	detail+=("${cmd%% *} ${k}K")
	((k > peak)) && peak=$k
done
sup=$(ps -o rss= -C vmctl | sort -n | tail -1)
row "vmctl peak RSS" "$((peak / 1024)).$(((peak % 1024) * 10 / 1024)) MiB (${detail[*]}); a supervisor: $((sup / 1024)) MiB" "< 10 MiB"

echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs, $(uname -r), $(qemu-system-x86_64 --version | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| benchmark | result | goal |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
