#!/usr/bin/env bash
# Benchmarks of issue 3 (the seed's VPS on debian-12), as a Markdown table for BENCHMARKS.md.
#
#   sudo scripts/bench-vps.sh        # BENCH_N=3 boots per side
#
# - vmctl start --wait of vm-configs/web.toml vs the seed's own command line on the same image
#   (BIOS boot, -hda, -m 2G -smp 1, same forwards), alternating: time from launch to the first
#   HTTP 200 from gunicorn and to the SSH banner (goal: vmctl <= 0.5x the seed's time);
# - QEMU's RSS after boot (both); image build time (warm package cache) and image size.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-3}
[[ $(id -u) -eq 0 ]] || { echo "bench-vps: run as root (the image build needs it)" >&2; exit 1; }

scripts/install-deps.sh >/dev/null
cargo build --release --locked -q
V=$PWD/target/release/vmctl
work=$(mktemp -d /tmp/vmctl-bench-vps.XXXXXX)
# Run as root, QEMU runs as vmctl-qemu and must pass through to the home's images.
chmod 0711 "$work"
export VMCTL_HOME=$work/home
export VMCTL_CACHE_DIR=${VMCTL_CACHE_DIR:-$PWD/target/vmctl-test/cache}
mkdir -p "$VMCTL_CACHE_DIR"
seed_pid=
cleanup() {
	"$V" kill web >/dev/null 2>&1 || true
	[[ -n $seed_pid ]] && kill -9 "$seed_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%d", m}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Print "ssh_ms http_ms" measured from $1 (ns): first SSH banner on port $2, first HTTP 200 on $3.
probe() {
	python3 - "$1" "$2" "$3" <<'PY'
import socket, sys, threading, time, urllib.request
t0, ssh_port, http_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
res = {}
def ms(): return (time.time_ns() - t0) // 1_000_000
def ssh():
    while "ssh" not in res:
        try:
            with socket.create_connection(("127.0.0.1", ssh_port), timeout=3) as s:
                s.settimeout(3)
                if s.recv(4) == b"SSH-": res.setdefault("ssh", ms())
        except OSError: pass
        time.sleep(0.05)
def http():
    while "http" not in res:
        def attempt():
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=3).status == 200:
                    res.setdefault("http", ms())
            except Exception: pass
        threading.Thread(target=attempt, daemon=True).start()
        time.sleep(0.05)
a, b = threading.Thread(target=ssh), threading.Thread(target=http)
a.start(); b.start(); a.join(); b.join()
print(res["ssh"], res["http"])
PY
}

rows=()
row() { rows+=("| $1 | $2 | $3 |"); echo "  $1: $2 (goal $3)" >&2; }

echo "== image build (warm cache)" >&2
"$V" image build tiny >/dev/null 2>&1
t0=$(now); "$V" image build debian-12 --force >/dev/null 2>&1 || "$V" image build debian-12 >/dev/null; t1=$(now)
img=$VMCTL_HOME/images/debian-12/x86_64
row "debian-12 image build (package cache warm)" "$(($(ms "$t0" "$t1") / 1000)) s" "-"
row "debian-12 image size" "qcow2 $(($(stat -c %s "$img/disk.qcow2") / 1048576)) MiB, kernel+initrd $((($(stat -c %s "$img/kernel") + $(stat -c %s "$img/initrd")) / 1048576)) MiB" "-"

ssh_p=$(free_port); http_p=$(free_port)
"$V" create web --from vm-configs/web.toml --port "$ssh_p:22" --port "$http_p:8080" >/dev/null
# First boot provisions the disk (user, app enabled); the seed's command then boots a copy of it.
"$V" start web --wait >/dev/null
"$V" stop web >/dev/null
seed_disk=$work/seed.qcow2

echo "== boot to SSH and HTTP: vmctl vs the seed's command ($N each, alternating)" >&2
v_ssh=(); v_http=(); s_ssh=(); s_http=(); v_rss=(); s_rss=()
for i in $(seq "$N"); do
	t0=$(now)
	probe "$t0" "$ssh_p" "$http_p" >"$work/probe" &
	pp=$!
	"$V" start web >/dev/null
	wait "$pp"; read -r a b <"$work/probe"
	v_ssh+=("$a"); v_http+=("$b")
	v_rss+=("$(($(ps -o rss= -p "$("$V" status web --json | sed -n 's/^  "pid": \([0-9]*\),$/\1/p')") / 1024))")
	"$V" stop web >/dev/null

	rm -f "$seed_disk"
	qemu-img create -q -f qcow2 -F qcow2 -b "$VMCTL_HOME/vms/web/disk.qcow2" "$seed_disk"
	t0=$(now)
	probe "$t0" "$ssh_p" "$http_p" >"$work/probe" &
	pp=$!
	qemu-system-x86_64 -m 2G -smp 1 -display none \
		-nic "user,hostfwd=tcp:127.0.0.1:$ssh_p-:22,hostfwd=tcp:127.0.0.1:$http_p-:8080" \
		-hda "$seed_disk" >/dev/null 2>&1 &
	seed_pid=$!
	wait "$pp"; read -r a b <"$work/probe"
	s_ssh+=("$a"); s_http+=("$b")
	s_rss+=("$(($(ps -o rss= -p "$seed_pid") / 1024))")
	kill -9 "$seed_pid"; wait "$seed_pid" 2>/dev/null || true; seed_pid=
done
vh=$(printf '%s\n' "${v_http[@]}" | median); sh=$(printf '%s\n' "${s_http[@]}" | median)
row "launch → first HTTP 200: vmctl start" "$vh ms (runs: ${v_http[*]})" "-"
row "launch → first HTTP 200: seed's command (BIOS, -hda)" "$sh ms (runs: ${s_http[*]})" "-"
row "vmctl / seed, time to HTTP 200" "$(awk -v a="$vh" -v b="$sh" 'BEGIN {printf "%.2fx", a/b}')" "≤ 0.5x"
row "launch → SSH banner: vmctl / seed" "$(printf '%s\n' "${v_ssh[@]}" | median) ms / $(printf '%s\n' "${s_ssh[@]}" | median) ms" "-"
row "QEMU RSS after boot: vmctl / seed" "$(printf '%s\n' "${v_rss[@]}" | median) MiB / $(printf '%s\n' "${s_rss[@]}" | median) MiB" "-"

echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs, $(uname -r), $(qemu-system-x86_64 --version | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| benchmark | result | goal |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
