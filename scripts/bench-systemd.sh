#!/usr/bin/env bash
# Benchmarks of issue 4 (VMs as systemd services), as a Markdown table for BENCHMARKS.md.
#
#   sudo scripts/bench-systemd.sh    # BENCH_N=5 rounds: reboot, stop, start without a unit
#
# Runs under a real systemd 252 in a systemd-nspawn container (the tests' harness,
# tests/integration/nspawn.rs) with the release vmctl and the tiny guest under TCG, VM "web"
# installed with `vmctl systemd install web --enable`:
# - container boot → the autostarted VM's forwarded port answers: the container's PID 1 start
#   (`UserspaceTimestampMonotonic`) to the unit's READY=1 (`ActiveEnterTimestampMonotonic`),
#   which `vmctl run` sends when an HTTP request through the forwarded port got the guest's reply;
#   split at `vmctl run`'s start (`ExecMainStartTimestampMonotonic`); for comparison, `vmctl start
#   --wait` of the same guest without a unit, in the same container;
# - `systemctl stop` beyond the guest's own poweroff (goal < 200 ms): the wall time of
#   `systemctl stop` in the container minus the guest's part, which `vmctl run` logs to the
#   journal (`stopped ... seconds=S`: its first ACPI press, QMP system_powerdown, to QEMU's exit
#   seen on a pidfd).
# The measuring is the ignored test systemd_e2e::benchmark_systemd_boot_to_port_and_stop_overhead;
# this script builds it in release mode, runs it and turns its lines into the table.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-5}
[[ $(id -u) -eq 0 ]] || { echo "bench-systemd: run as root (systemd-nspawn, mounts, cgroups)" >&2; exit 1; }

scripts/install-deps.sh --test >/dev/null
scripts/nspawn-rootfs.sh >/dev/null
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
out=$(mktemp /tmp/vmctl-bench-systemd.XXXXXX)
trap 'rm -f "$out"' EXIT
echo "== building (release) and running $N rounds (reboot, stop, start without a unit) in a container" >&2
BENCH_N=$N cargo test --release --locked -q --test integration \
	systemd_e2e::benchmark_systemd_boot_to_port_and_stop_overhead -- --ignored --exact --nocapture \
	>"$out" 2>&1 || { tail -n 40 "$out" >&2; echo "bench-systemd: the benchmark failed" >&2; exit 1; }
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# The values of KEY on the benchmark's lines of KIND (boot or stop), one a line.
values() { sed -n "s/^bench-systemd: $1 .*\b$2=\(-\?[0-9]*\).*/\1/p" "$out"; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%d", m}'; }
runs() { values "$1" "$2" | paste -sd' '; }

rows=()
row() { rows+=("| $1 | $2 | $3 |"); echo "  $1: $2 (goal $3)" >&2; }
stat_row() { # label kind key goal
	local m
	m=$(values "$2" "$3" | median)
	row "$1" "$m ms (runs: $(runs "$2" "$3"))" "$4"
}
[[ $(values boot boot_to_port_ms | wc -l) -eq $N && $(values stop stop_ms | wc -l) -eq $N && $(values plain start_wait_ms | wc -l) -eq $N ]] ||
	{ cat "$out" >&2; echo "bench-systemd: expected $N lines of each measurement" >&2; exit 1; }

stat_row "container boot (PID 1 start) → autostarted VM's port answers (READY=1)" boot boot_to_port_ms "-"
stat_row "… of which PID 1 start → \`vmctl run\` started" boot boot_to_exec_ms "-"
stat_row "… of which \`vmctl run\` → guest answers" boot exec_to_ready_ms "-"
stat_row "for comparison: \`vmctl start --wait\` of the same guest without a unit" plain start_wait_ms "-"
stat_row "\`systemctl stop\` (booted guest)" stop stop_ms "-"
stat_row "guest's own poweroff (ACPI press → QEMU exit)" stop guest_poweroff_ms "-"
stat_row "\`systemctl stop\` overhead beyond the guest's poweroff" stop overhead_ms "< 200 ms"

echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs, $(uname -r), $(qemu-system-x86_64 --version | head -1), systemd 252 in systemd-nspawn, load $load_before before and $load_after after."
echo
echo "| benchmark | result | goal |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
