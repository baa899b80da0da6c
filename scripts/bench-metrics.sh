#!/usr/bin/env bash
# The metrics endpoint (issue 16), as a Markdown table for BENCHMARKS.md: with 8 running tiny
# VMs, how long a scrape of `vmctl metrics` takes (hyperfine running curl, against curl of a
# static file served by Python's http.server on the same host, the floor of one HTTP request),
# how long `vmctl stats --json` and `vmctl list --json` take beside it, and the endpoint's
# resident memory after the scrapes.
#
#   sudo scripts/bench-metrics.sh        # BENCH_RUNS=50 scrapes
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-50}
[[ $(id -u) -eq 0 ]] || { echo "bench-metrics: run as root (QEMU as vmctl-qemu, as in the tests)" >&2; exit 1; }

scripts/install-deps.sh --bench-libvirt >/dev/null # hyperfine
cargo build --release --locked -q
V=$PWD/target/release/vmctl
work=$(mktemp -d /tmp/vmctl-bench-metrics.XXXXXX)
chmod 0711 "$work"
export VMCTL_HOME=$work/home
export VMCTL_CACHE_DIR=${VMCTL_CACHE_DIR:-$PWD/target/vmctl-test/cache}
mkdir -p "$VMCTL_CACHE_DIR"
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	for i in $(seq 8); do "$V" kill "m$i" >/dev/null 2>&1; done
	rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$V" image build tiny >/dev/null 2>&1
for i in $(seq 8); do
	"$V" create "m$i" --image tiny --mem 256M --disk 1G --port "$(free_port):8080" >/dev/null
	"$V" start "m$i" --wait >/dev/null
done

mp=$(free_port) sp=$(free_port)
"$V" metrics --listen "127.0.0.1:$mp" 2>/dev/null &
pids+=($!)
metrics_pid=$!
mkdir -p "$work/static"
curl -s "http://127.0.0.1:$mp/metrics" -o /dev/null --retry 50 --retry-connrefused --retry-delay 0
curl -s "http://127.0.0.1:$mp/metrics" -o "$work/static/metrics.txt"
(cd "$work/static" && exec python3 -m http.server "$sp" --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=($!)
curl -s "http://127.0.0.1:$sp/metrics.txt" -o /dev/null --retry 50 --retry-connrefused --retry-delay 0

hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$work/h.json" \
	"curl -s -o /dev/null http://127.0.0.1:$mp/metrics" \
	"curl -s -o /dev/null http://127.0.0.1:$sp/metrics.txt" \
	"$V list --json" >/dev/null
read -r scrape static list < <(python3 -c 'import json,sys; print(" ".join("%.1f" % (r["median"] * 1000) for r in json.load(open(sys.argv[1]))["results"]))' "$work/h.json")
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$metrics_pid/status")
hwm_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$metrics_pid/status")
series=$(grep -c '^vmctl_' "$work/static/metrics.txt")

echo
echo "| measure (8 running tiny VMs; median of $RUNS, hyperfine) | result | goal |"
echo "|---|---|---|"
echo "| scrape of \`vmctl metrics\` (curl, $series series) | $scrape ms | < 50 ms |"
echo "| the same text as a static file (Python's http.server) | $static ms | - |"
echo "| \`vmctl list --json\` | $list ms | - |"
echo "| endpoint's RSS after $((RUNS + 5)) scrapes (peak) | $((rss_kib / 1024)) MiB ($((hwm_kib / 1024)) MiB) | < 10 MiB |"
