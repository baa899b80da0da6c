#!/usr/bin/env bash
# Private networks between VMs (issue 12), printed as a Markdown table for BENCHMARKS.md.
# Ratios are measured in one run on one machine; numbers from different machines don't compare.
#
#   scripts/bench-net.sh            # N=3 runs per candidate, alternating
#   BENCH_N=5 scripts/bench-net.sh
#
# 1. VM to VM, two tiny guests (256M, TCG): round trip (busybox ping, 10 × 0.2 s, average) and
#    throughput (the guest fetches 16 MiB over HTTP from the other one: its pull CGI), for
#      a. vmctl's network (its switch process; QEMU -netdev stream to it)
#      b. QEMU's multicast socket (-netdev socket,mcast= on 127.0.0.1; no process)
#      c. vde_switch (Debian's vde2; -netdev vde)
#      d. host forwards: QEMU user networking, the guest fetching 10.0.2.2:HOSTPORT, which the
#         other guest's forward serves (no ICMP through a forward: no round trip)
#    b-d run the same kernel and initrd by hand, their NICs set up by the same kernel command
#    line (vmctl.nic=, vmctl.host=) the tiny guest's init reads.
# 2. vmctl up of 8 tiny VMs with no ordering vs one tiny VM's start --wait  (goal <= 5×);
#    vmctl down of the 8 vs one VM's stop                                 (goal <= 2×)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-3}

scripts/install-deps.sh >/dev/null
command -v vde_switch >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q vde2 >/dev/null
cargo build --release --locked -q
V=$PWD/target/release/vmctl
work=$(mktemp -d /tmp/vmctl-bench-net.XXXXXX)
# Run as root, QEMU runs as vmctl-qemu and must pass through to the home's images.
chmod 0711 "$work"
export VMCTL_HOME=$work/home
export VMCTL_CACHE_DIR=${VMCTL_CACHE_DIR:-$PWD/target/vmctl-test/cache}
mkdir -p "$VMCTL_CACHE_DIR"
pids=()
cleanup() {
	for vm in $("$V" list --json 2>/dev/null | sed -n 's/^    "name": "\(.*\)",$/\1/p'); do
		"$V" kill "$vm" >/dev/null 2>&1 || true
	done
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
"$V" image build tiny >/dev/null 2>&1
IMG=$VMCTL_HOME/images/tiny/x86_64
KIB=16384

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
get() { curl -s -m 120 "http://127.0.0.1:$1$2"; }
# Until GET / through the port is answered by the guest.
wait_http() { until get "$1" / | grep -q "vmctl tiny guest"; do sleep 0.1; done; }
# Until the guest behind $1 gets the peer's page from inside (its NIC and the path are up).
wait_peer() { until get "$1" "/cgi-bin/fetch?$2:8080/" | grep -q "vmctl tiny guest"; do sleep 0.2; done; }
# "avg_ms MB/s" from the guest behind port $1 to the peer $2 (address) / $3 (pull target).
measure() {
	local rtt secs bytes
	if [[ $2 == - ]]; then
		rtt=-
	else
		rtt=$(get "$1" "/cgi-bin/ping?$2" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
	fi
	read -r _ secs _ bytes < <(get "$1" "/cgi-bin/pull?$3:$KIB")
	if ((bytes < KIB * 1024)); then
		echo "pull from $3 brought $bytes bytes" >&2
		exit 1
	fi
	echo "$rtt $(awk -v b="$bytes" -v s="$secs" 'BEGIN {printf "%.1f", b / s / 1e6}')"
}

# A tiny guest by hand: name, its forward port, then -netdev options for its second NIC (or
# none), its MAC and address there, and its peer's address.
plain() {
	local name=$1 port=$2 nic=$3 mac=$4 addr=$5 peer=$6 extra=()
	local append="panic=-1 quiet console=ttyS0 vmctl.name=$name"
	if [[ -n $nic ]]; then
		extra=(-netdev "$nic,id=n1" -device "virtio-net-pci,netdev=n1,mac=$mac")
		append+=" vmctl.nic=$mac,$addr/24 vmctl.host=$peer,peer"
	fi
	qemu-system-x86_64 -machine pc -accel tcg,tb-size=64 -m 256M -smp 1 -nodefaults \
		-display none -kernel "$IMG/kernel" -initrd "$IMG/initrd" -append "$append" \
		-serial "file:$work/$name.log" \
		-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:8080" -device virtio-net-pci,netdev=n0 \
		"${extra[@]}" >/dev/null 2>&1 &
	pids+=($!)
}
stop_plain() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}

declare -A rtts tputs
record() { rtts[$1]+="$2 "; tputs[$1]+="$3 "; echo "  $1: rtt $2 ms, $3 MB/s" >&2; }

"$V" network create lan >/dev/null
pa=$(free_port)
"$V" create a --mem 256M --disk 1G --network lan --port "$pa:8080" >/dev/null
"$V" create b --mem 256M --disk 1G --network lan >/dev/null
b_ip=$("$V" status b --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["networks"][0]["address"])')

echo "== 1. VM to VM ($N runs each, alternating)" >&2
for i in $(seq "$N"); do
	"$V" start b --wait >/dev/null
	"$V" start a --wait >/dev/null
	wait_peer "$pa" "$b_ip"
	record vmctl $(measure "$pa" "$b_ip" "$b_ip:8080")
	if ((i == 1)); then
		# The switch killed: its VMs' supervisors start another and hand it their NICs.
		t0=$(now)
		kill -9 "$(cat "$VMCTL_HOME/networks/lan/run/switch.pid")"
		vmctl_recovers=no
		for _ in $(seq 20); do
			if get "$pa" "/cgi-bin/fetch?$b_ip:8080/" | grep -q "vmctl tiny guest"; then
				vmctl_recovers="yes, after $(ms "$t0" "$(now)") ms"; break
			fi
		done
		echo "  vmctl: after its switch was killed, the guests meet again: $vmctl_recovers" >&2
	fi
	"$V" stop a >/dev/null
	"$V" stop b >/dev/null

	p1=$(free_port) p2=$(free_port) mport=$((40000 + RANDOM % 20000))
	for n in 1 2; do
		eval "p=\$p$n"
		plain "m$n" "$p" "socket,mcast=230.0.89.1:$mport,localaddr=127.0.0.1" "52:54:00:aa:00:0$n" "10.89.9.$n" "10.89.9.$((3 - n))"
	done
	wait_http "$p1"; wait_http "$p2"; wait_peer "$p1" 10.89.9.2
	record mcast $(measure "$p1" 10.89.9.2 10.89.9.2:8080)
	stop_plain

	vde_switch -s "$work/vde" -d -p "$work/vde.pid" >/dev/null 2>&1
	p1=$(free_port) p2=$(free_port)
	for n in 1 2; do
		eval "p=\$p$n"
		plain "v$n" "$p" "vde,sock=$work/vde" "52:54:00:bb:00:0$n" "10.89.9.$n" "10.89.9.$((3 - n))"
	done
	wait_http "$p1"; wait_http "$p2"; wait_peer "$p1" 10.89.9.2
	record vde $(measure "$p1" 10.89.9.2 10.89.9.2:8080)
	if ((i == 1)); then
		# The switch killed and started again at the same place: do the guests meet again?
		kill -9 "$(cat "$work/vde.pid")"; rm -rf "$work/vde" "$work/vde.pid"
		vde_switch -s "$work/vde" -d -p "$work/vde.pid" >/dev/null 2>&1
		vde_recovers=no
		for _ in $(seq 20); do
			if get "$p1" "/cgi-bin/fetch?10.89.9.2:8080/" | grep -q "vmctl tiny guest"; then
				vde_recovers=yes; break
			fi
		done
		echo "  vde: after the switch was killed and restarted, the guests meet again: $vde_recovers" >&2
	fi
	stop_plain
	kill "$(cat "$work/vde.pid")"; rm -rf "$work/vde" "$work/vde.pid"

	p1=$(free_port) p2=$(free_port)
	plain f1 "$p1" "" "" "" ""
	plain f2 "$p2" "" "" "" ""
	wait_http "$p1"; wait_http "$p2"
	record forwards $(measure "$p1" - "10.0.2.2:$p2")
	stop_plain
done

rows=()
for c in vmctl mcast vde forwards; do
	rtt=$(printf '%s\n' ${rtts[$c]} | median)
	tput=$(printf '%s\n' ${tputs[$c]} | median)
	rows+=("$c|$rtt|$tput")
done
base_t=$(printf '%s\n' ${tputs[forwards]} | median)
vm_rtt=$(printf '%s\n' ${rtts[vmctl]} | median)

echo "== 2. up of 8 vs start of 1 ($N each, alternating)" >&2
cat >"$work/stack.toml" <<EOF
name = "b8"
[networks.lan]
EOF
for i in $(seq 8); do
	printf '[vms.v%d]\nmemory = "256M"\ndisk = "1G"\nnetworks = ["lan"]\nports = ["%d:8080"]\n' "$i" "$(free_port)" >>"$work/stack.toml"
done
po=$(free_port)
"$V" create one --mem 256M --disk 1G --port "$po:8080" >/dev/null
ups=() starts=() downs=() stops=()
for i in $(seq "$N"); do
	t0=$(now); "$V" start one --wait >/dev/null; t1=$(now); starts+=("$(ms "$t0" "$t1")")
	t0=$(now); "$V" stop one >/dev/null; t1=$(now); stops+=("$(ms "$t0" "$t1")")
	t0=$(now); "$V" up -f "$work/stack.toml" >/dev/null; t1=$(now); ups+=("$(ms "$t0" "$t1")")
	t0=$(now); "$V" down -f "$work/stack.toml" >/dev/null; t1=$(now); downs+=("$(ms "$t0" "$t1")")
done
up=$(printf '%s\n' "${ups[@]}" | median); start=$(printf '%s\n' "${starts[@]}" | median)
down=$(printf '%s\n' "${downs[@]}" | median); stop=$(printf '%s\n' "${stops[@]}" | median)

echo
echo "| candidate | VM-to-VM round trip (ms, median of $N) | VM-to-VM throughput (MB/s, 16 MiB over HTTP, median of $N) | throughput vs host forwards |"
echo "|---|---|---|---|"
for r in "${rows[@]}"; do
	IFS='|' read -r c rtt tput <<<"$r"
	echo "| $c | $rtt | $tput | $(awk -v a="$tput" -v b="$base_t" 'BEGIN {printf "%.2f×", a / b}') |"
done
echo
echo "| measure | result | goal |"
echo "|---|---|---|"
echo "| vmctl up, 8 tiny VMs, no ordering, vs start --wait of one | $up ms vs $start ms = $(awk -v a="$up" -v b="$start" 'BEGIN {printf "%.2f×", a / b}') | ≤ 5× |"
echo "| vmctl down of the 8 vs stop of one | $down ms vs $stop ms = $(awk -v a="$down" -v b="$stop" 'BEGIN {printf "%.2f×", a / b}') | ≤ 2× |"
echo "| private network round trip (vmctl) | $vm_rtt ms | - |"
echo "| the switch killed: the guests meet again (vmctl: new switch, NICs handed over) | $vmctl_recovers | yes |"
echo "| vde_switch killed and started again: the guests meet again | $vde_recovers | - |"
