#!/usr/bin/env bash
# After a test run: fail if a process started from one of its test homes (a QEMU, a passt, a
# network's switch, a `vmctl run` supervisor) is still alive. The homes of a run are named after its VMCTL_TEST_RUN id
# (tests/integration/harness.rs), which appears in the argv of every process started there;
# other runs and other people's processes do not carry it. This only reports: the test
# harness is what stops the VMs its tests start.
#
#   scripts/check-leaks.sh RUN_ID
set -euo pipefail
run=${1:?usage: check-leaks.sh RUN_ID}
needle="/vmctl-t$run-"
left=()
for d in /proc/[0-9]*; do
	pid=${d#/proc/}
	[[ $pid == "$$" ]] && continue
	cmd=$({ tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null) || continue
	# passt's argv names no path: its environment (VMCTL_HOME, inherited) does.
	env=$({ tr '\0' ' ' <"$d/environ"; } 2>/dev/null) || env=
	[[ $cmd == *"$needle"* || $env == *"$needle"* ]] && left+=("$pid: ${cmd:0:200}")
done
if ((${#left[@]})); then
	echo "check-leaks: ${#left[@]} process(es) of test run $run outlived it:" >&2
	printf '  %s\n' "${left[@]}" >&2
	exit 1
fi
echo "check-leaks: no process of test run $run is left"
