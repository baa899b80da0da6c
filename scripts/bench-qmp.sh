#!/usr/bin/env bash
# Benchmarks of issue 5 (snapshots and the QMP shell), as a Markdown table for BENCHMARKS.md.
#
#   scripts/bench-qmp.sh             # BENCH_N=3 snapshots/reverts, 20 round trips
#
# - live `vmctl snapshot create` and `snapshot revert --force` of a running 2 GB guest: time, the
#   saved VM state, and how much the VM's qcow2 grows (file size and allocated blocks);
# - QMP round trips: `vmctl qmp NAME --exec query-status` end to end (process start, connect,
#   negotiation, one command), and one command inside a session (100 commands on stdin);
#   and the floor: the same connect + command from a Python process already running; the
#   interactive shell through a pseudo-terminal (a command's round trip to the next prompt, and
#   how soon an event shows while the prompt waits).
# The guest is the debian-12 image if it was built (sudo scripts/bench-vps.sh or the test suite,
# under target/vmctl-test/images-home), with vm-configs/web.toml's shape (2G, 1 CPU); else the
# tiny image with --mem 2G, which touches far less of its RAM (the table says which).
# Root is not needed: the images are reused, not built.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-3}
R=${BENCH_ROUNDTRIPS:-20}

cargo build --release --locked -q
V=$PWD/target/release/vmctl
work=$(mktemp -d /tmp/vmctl-bench-qmp.XXXXXX)
# Run as root, QEMU runs as vmctl-qemu and must pass through to the home's images.
chmod 0711 "$work"
export VMCTL_HOME=$work/home
export VMCTL_CACHE_DIR=${VMCTL_CACHE_DIR:-$PWD/target/vmctl-test/cache}
mkdir -p "$VMCTL_CACHE_DIR" "$VMCTL_HOME/images"
cleanup() {
	"$V" kill big >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s%N; }
us() { echo $((($2 - $1) / 1000)); }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%d", m}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.0f MiB", b / 1048576}'; }
rows=()
row() { rows+=("| $1 | $2 | $3 |"); echo "  $1: $2" >&2; }

shared=$PWD/target/vmctl-test/images-home/images
ssh_p=$(free_port); http_p=$(free_port)
if [[ -f $shared/debian-12/x86_64/disk.qcow2 ]]; then
	ln -s "$shared/debian-12" "$VMCTL_HOME/images/debian-12"
	guest="debian-12 (vm-configs/web.toml: 2 GB, 1 CPU, gunicorn)"
	"$V" create big --from vm-configs/web.toml --port "$ssh_p:22" --port "$http_p:8080" >/dev/null
else
	[[ -f $shared/tiny/x86_64/disk.qcow2 ]] || "$V" --home "$(dirname "$shared")" image build tiny >/dev/null 2>&1
	ln -s "$shared/tiny" "$VMCTL_HOME/images/tiny"
	guest="tiny image with --mem 2G (debian-12 not built)"
	"$V" create big --mem 2G --disk 2G --port "$http_p:8080" >/dev/null
fi
echo "== guest: $guest" >&2
"$V" start big --wait >/dev/null
disk=$VMCTL_HOME/vms/big/disk.qcow2
alloc() { echo $(($(stat -c %b "$disk") * $(stat -c %B "$disk"))); }

echo "== live snapshots ($N creates, $N reverts)" >&2
c_ts=(); r_ts=(); grow_size=(); grow_alloc=()
for i in $(seq "$N"); do
	s0=$(stat -c %s "$disk"); a0=$(alloc)
	t0=$(now); "$V" snapshot create big "s$i" >/dev/null 2>&1; t1=$(now)
	c_ts+=("$(($(us "$t0" "$t1") / 1000))")
	grow_size+=("$(($(stat -c %s "$disk") - s0))"); grow_alloc+=("$(($(alloc) - a0))")
done
for i in $(seq "$N"); do
	t0=$(now); "$V" snapshot revert big s1 --force >/dev/null 2>&1; t1=$(now)
	r_ts+=("$(($(us "$t0" "$t1") / 1000))")
done
vmstate=$("$V" snapshot list big --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["vm_state_size"])')
row "live snapshot create (disk + RAM)" "$(printf '%s\n' "${c_ts[@]}" | median) ms (runs: ${c_ts[*]})" "-"
row "live snapshot revert (--force)" "$(printf '%s\n' "${r_ts[@]}" | median) ms (runs: ${r_ts[*]})" "-"
row "saved VM state per snapshot" "$(mib "$vmstate")" "-"
row "qcow2 growth per snapshot: file size" "$(for g in "${grow_size[@]}"; do mib "$g"; echo -n ", "; done | sed 's/, $//')" "-"
row "qcow2 growth per snapshot: allocated" "$(for g in "${grow_alloc[@]}"; do mib "$g"; echo -n ", "; done | sed 's/, $//')" "-"
if [[ -n ${guest%%tiny*} ]] && curl -fsS -m 5 "http://127.0.0.1:$http_p/" >/dev/null 2>&1; then
	row "guest's app after the reverts" "answers" "-"
fi

echo "== QMP round trips ($R each)" >&2
e_ts=()
sock=$VMCTL_HOME/vms/big/run/qmp-ctl.sock
lock=$VMCTL_HOME/vms/big/run/qmp-ctl.lock
for _ in $(seq "$R"); do
	t0=$(now); "$V" qmp big --exec query-status >/dev/null; t1=$(now)
	e_ts+=("$(us "$t0" "$t1")")
done
# The floor: connect, greeting, qmp_capabilities and query-status from an already running process.
raw_us=$(flock "$lock" python3 - "$sock" "$R" <<'PY'
import json, socket, statistics, sys, time
ts = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
    f.readline()
    for cmd in ("qmp_capabilities", "query-status"):
        f.write(json.dumps({"execute": cmd}) + "\n"); f.flush()
        while "return" not in json.loads(f.readline()): pass
    s.close(); ts.append((time.perf_counter() - t0) * 1e6)
print(int(statistics.median(ts)))
PY
)
one=(); hundred=()
for _ in $(seq 101); do echo query-status; done >"$work/101"
for _ in 1 2 3; do
	t0=$(now); echo query-status | "$V" qmp big >/dev/null; t1=$(now); one+=("$(us "$t0" "$t1")")
	t0=$(now); "$V" qmp big <"$work/101" >/dev/null; t1=$(now); hundred+=("$(us "$t0" "$t1")")
done
in_session=$((($(printf '%s\n' "${hundred[@]}" | median) - $(printf '%s\n' "${one[@]}" | median)) / 100))
# The interactive shell through a pseudo-terminal: Enter to the reply and the next prompt, and
# how long an event that comes while the prompt waits takes to show (QEMU's timestamp to screen).
read -r tty_us event_us < <(python3 - "$V" "$R" <<'PY'
import os, pty, re, select, statistics, subprocess, sys, time
v, n = sys.argv[1], int(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execv(v, [v, "qmp", "big"])
buf = b""
def until(pat, t=30):
    global buf
    end = time.time() + t
    while True:
        m = re.search(pat, buf, re.S)
        if m:
            buf = buf[m.end():]
            return m
        r, _, _ = select.select([fd], [], [], max(0, end - time.time()))
        if not r:
            sys.exit(f"timed out waiting for {pat!r}")
        buf += os.read(fd, 65536)
prompt = re.escape(b"qmp:big> ") + rb"\x1b\[0K\r\x1b\[9C"
until(prompt)
ts = []
for _ in range(n):
    t0 = time.perf_counter()
    os.write(fd, b"query-status\r")
    until(rb'"status": "running".*?' + prompt)
    ts.append((time.perf_counter() - t0) * 1e6)
ev = []
for _ in range(5):
    subprocess.run([v, "pause", "big"], check=True, capture_output=True)
    m = until(rb"event STOP at (\d+\.\d+)")
    ev.append((time.time() - float(m.group(1))) * 1e6)
    subprocess.run([v, "resume", "big"], check=True, capture_output=True)
    until(rb"event RESUME")
os.write(fd, b"\x04")
print(int(statistics.median(ts)), int(statistics.median(ev)))
PY
)
row "vmctl qmp --exec query-status, end to end" "$(($(printf '%s\n' "${e_ts[@]}" | median) / 1000)).$((($(printf '%s\n' "${e_ts[@]}" | median) % 1000) / 100)) ms (median of $R)" "-"
row "raw QMP connect + query-status from a running process (floor)" "$((raw_us / 1000)).$(((raw_us % 1000) / 100)) ms" "-"
row "one command inside a session (stdin, 101 vs 1 commands)" "$in_session µs" "-"
row "interactive shell: Enter to reply and next prompt (pty, median of $R)" "$tty_us µs" "-"
row "interactive shell: event shown while the prompt waits (QEMU timestamp to screen, median of 5)" "$event_us µs" "-"

echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs, $(uname -r), $(qemu-system-x86_64 --version | head -1), load $(cut -d' ' -f1-3 /proc/loadavg). Guest: $guest."
echo
echo "| benchmark | result | goal |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
