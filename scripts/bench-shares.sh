#!/usr/bin/env bash
# Shared folders (issue 13), printed as a Markdown table for BENCHMARKS.md. Ratios are measured
# in one run on one machine; numbers from different machines don't compare.
#
#   scripts/bench-shares.sh          # N=3 runs each, alternating
#   BENCH_N=5 scripts/bench-shares.sh
#
# Sequential write (synced) and read (page cache dropped) of a 256 MiB file, timed inside a
# tiny guest (512M, TCG), through:
#   a. vmctl's shared folder (virtio-fs, virtiofsd as the folder's owner)
#   b. 9p (QEMU's -virtfs, security_model=none), the same guest by hand
#   c. the guest's own disk (its virtio-blk qcow2 overlay, written raw)
# and, on the debian-12 guest, `vmctl cp` of the same file host → guest and back (scp).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-3}
MIB=${BENCH_MIB:-256}

scripts/install-deps.sh >/dev/null
cargo build --release --locked -q
V=$PWD/target/release/vmctl
work=$(mktemp -d /tmp/vmctl-bench-shares.XXXXXX)
# Run as root, QEMU runs as vmctl-qemu and must pass through to the home's images.
chmod 0711 "$work"
export VMCTL_HOME=$work/home
export VMCTL_CACHE_DIR=${VMCTL_CACHE_DIR:-$PWD/target/vmctl-test/cache}
mkdir -p "$VMCTL_CACHE_DIR"
pids=()
cleanup() {
	# Every VM of this run's home, by its folder (vmctl kill ends it by its own pidfile).
	for dir in "$VMCTL_HOME"/vms/*/; do
		[[ -d $dir ]] && "$V" kill "$(basename "$dir")" >/dev/null 2>&1 || true
	done
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
"$V" image build tiny >/dev/null 2>&1
"$V" image build debian-12 >/dev/null 2>&1
IMG=$VMCTL_HOME/images/tiny/x86_64

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
get() { curl -s -m 600 "http://127.0.0.1:$1$2"; }
wait_http() { until get "$1" / | grep -q "vmctl tiny guest"; do sleep 0.1; done; }
mbps() { awk -v s="$1" -v m="$MIB" 'BEGIN {printf "%.1f", m * 1.048576 / s}'; }
# "write_MBps read_MBps" of PATH in the guest behind port $1.
measure() {
	local w r
	w=$(get "$1" "/cgi-bin/ddw?$2:$MIB" | sed -n 's/^secs //p')
	r=$(get "$1" "/cgi-bin/ddr?$2" | sed -n 's/^secs //p')
	if [[ -z $w || -z $r ]]; then
		echo "no figures from the guest for $2" >&2
		exit 1
	fi
	echo "$(mbps "$w") $(mbps "$r")"
}

# A folder of a user's: shares are served as their owner, never as root.
owner=nobody
shared=$work/shared
mkdir -p "$shared/vfs" "$shared/9p"
chown -R "$owner:" "$shared"
chmod 0755 "$shared"

declare -A writes reads
record() { writes[$1]+="$2 "; reads[$1]+="$3 "; echo "  $1: write $2 MB/s, read $3 MB/s" >&2; }

pv=$(free_port)
"$V" create sv --mem 512M --disk 1G --port "$pv:8080" --mount "$shared/vfs:/mnt/vfs" >/dev/null
echo "== tiny guest, $MIB MiB ($N runs each, alternating)" >&2
for i in $(seq "$N"); do
	"$V" start sv --wait >/dev/null
	record virtiofs $(measure "$pv" /mnt/vfs/file)
	record disk $(measure "$pv" /dev/vda)
	"$V" stop sv >/dev/null

	p9=$(free_port)
	qemu-system-x86_64 -machine pc -accel tcg,tb-size=64 -m 512M -smp 1 -nodefaults -display none \
		-kernel "$IMG/kernel" -initrd "$IMG/initrd" \
		-append "panic=-1 quiet console=ttyS0 vmctl.name=p9 vmctl.mount9p=p9,/mnt/p9" \
		-serial "file:$work/p9.log" \
		-virtfs "local,path=$shared/9p,mount_tag=p9,security_model=none" \
		-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$p9-:8080" -device virtio-net-pci,netdev=n0 \
		>/dev/null 2>&1 &
	pids+=($!)
	wait_http "$p9"
	record 9p $(measure "$p9" /mnt/p9/file)
	kill -9 "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done

echo "== debian-12: vmctl cp of $MIB MiB ($N runs)" >&2
ps=$(free_port)
"$V" create sd --image debian-12 --mem 1G --port "$ps:22" >/dev/null
"$V" start sd --wait --timeout 600 >/dev/null
head -c $((MIB << 20)) /dev/urandom >"$work/blob"
cps_in=() cps_out=() cp_failed=0
rate() { awk -v m="$MIB" -v ms="$(ms "$1" "$2")" 'BEGIN {printf "%.1f", m * 1048.576 / ms}'; }
for i in $(seq "$N"); do
	rm -f "$work/back"
	t0=$(now)
	if "$V" cp "$work/blob" sd:/tmp/blob >/dev/null; then
		cps_in+=("$(rate "$t0" "$(now)")")
	else
		cp_failed=$((cp_failed + 1))
	fi
	t0=$(now)
	if "$V" cp sd:/tmp/blob "$work/back" >/dev/null && cmp -s "$work/blob" "$work/back"; then
		cps_out+=("$(rate "$t0" "$(now)")")
	else
		cp_failed=$((cp_failed + 1))
	fi
	echo "  vmctl cp: in ${cps_in[-1]:-failed} MB/s, out ${cps_out[-1]:-failed} MB/s" >&2
done
"$V" stop sd >/dev/null

echo
echo "| path | write (MB/s, median of $N) | read (MB/s, median of $N) |"
echo "|---|---|---|"
for c in virtiofs 9p disk; do
	label=$c
	case $c in
	virtiofs) label="vmctl shared folder (virtio-fs, virtiofsd as the owner)" ;;
	9p) label="9p (QEMU -virtfs, security_model=none)" ;;
	disk) label="the guest's own disk (virtio-blk, qcow2 overlay)" ;;
	esac
	echo "| $label | $(printf '%s\n' ${writes[$c]} | median) | $(printf '%s\n' ${reads[$c]} | median) |"
done
echo "| vmctl cp, debian-12 guest (host → guest, guest → host; scp; $cp_failed of $((2 * N)) copies failed) | $(printf '%s\n' "${cps_in[@]}" | median) | $(printf '%s\n' "${cps_out[@]}" | median) |"
