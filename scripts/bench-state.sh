#!/usr/bin/env bash
# Saved state (issue 14), as a Markdown table for BENCHMARKS.md: the seed's VM
# (vm-configs/web.toml, debian-12, 1 vCPU, 2G) from `vmctl start` to its first HTTP 200, cold
# boot against resume from its saved state, alternating in one run; and the save itself
# (`vmctl suspend`: time and the state's size); clones (linked and full: time, size) and a
# compaction after the guest wrote and deleted 256 MiB (sizes before and after); an export
# (time, archive size) and its import into a home without the image.
#
#   sudo scripts/bench-state.sh          # BENCH_N=3 of each
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-3}
[[ $(id -u) -eq 0 ]] || { echo "bench-state: run as root (the image build needs it)" >&2; exit 1; }

scripts/install-deps.sh >/dev/null
cargo build --release --locked -q
V=$PWD/target/release/vmctl
work=$(mktemp -d /tmp/vmctl-bench-state.XXXXXX)
# Run as root, QEMU runs as vmctl-qemu and must pass through to the home's images.
chmod 0711 "$work"
export VMCTL_HOME=$work/home
export VMCTL_CACHE_DIR=${VMCTL_CACHE_DIR:-$PWD/target/vmctl-test/cache}
mkdir -p "$VMCTL_CACHE_DIR"
cleanup() {
	"$V" kill web >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
"$V" image build debian-12 >/dev/null 2>&1

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%d", m}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Milliseconds from $1 (ns) to the first HTTP 200 on port $2 (a new attempt every 20 ms).
first_200() {
	until [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$2/") == 200 ]]; do
		sleep 0.02
	done
	ms "$1" "$(now)"
}

ps=$(free_port) ph=$(free_port)
"$V" create web --from vm-configs/web.toml --port "$ps:22" --port "$ph:8080" >/dev/null
# The first boot provisions the guest; the runs below compare boots of a provisioned one.
"$V" start web --wait --timeout 600 >/dev/null
"$V" stop web >/dev/null

cold=() warm=() saves=() sizes=()
for i in $(seq "$N"); do
	t0=$(now)
	"$V" start web >/dev/null
	cold+=("$(first_200 "$t0" "$ph")")
	t0=$(now)
	"$V" suspend web >/dev/null
	saves+=("$(ms "$t0" "$(now)")")
	sizes+=("$(stat -c %s "$VMCTL_HOME/vms/web/saved.state")")
	t0=$(now)
	"$V" start web >/dev/null
	warm+=("$(first_200 "$t0" "$ph")")
	"$V" stop web >/dev/null
	echo "  run $i: cold boot ${cold[-1]} ms, resume ${warm[-1]} ms; save ${saves[-1]} ms, ${sizes[-1]} bytes" >&2
done

# Clones of the stopped VM: linked (what differs from the image) and full (standalone).
clone_ms() { # $1 name, $2 port, more: flags
	local t0 n=$1 p=$2
	shift 2
	t0=$(now)
	"$V" clone web "$n" --port "$p:22" "$@" >/dev/null
	ms "$t0" "$(now)"
}
bytes() { stat -c %b "$VMCTL_HOME/vms/$1/disk.qcow2" | awk '{print $1 * 512}'; }
src_bytes=$(bytes web)
linked_ms=$(clone_ms linked "$(free_port)") linked_bytes=$(bytes linked)
full_ms=$(clone_ms solo "$(free_port)" --full) full_bytes=$(bytes solo)
echo "  clones: linked $linked_ms ms ($linked_bytes bytes), full $full_ms ms ($full_bytes bytes); source overlay $src_bytes bytes" >&2

# Compaction: the guest writes 256 MiB and deletes it (with fstrim: the disk has
# discard=unmap), then `vmctl disk compact`.
"$V" start web --wait --timeout 600 >/dev/null
"$V" ssh web -- 'dd if=/dev/urandom of=/var/tmp/blob bs=1M count=256 status=none && sync' >/dev/null
"$V" stop web >/dev/null
grown=$(bytes web)
"$V" start web --wait --timeout 600 >/dev/null
"$V" ssh web -- 'rm /var/tmp/blob && sync && sudo -n fstrim -v /' >/dev/null
"$V" stop web >/dev/null
trimmed=$(bytes web)
t0=$(now)
"$V" disk compact web >/dev/null
compact_ms=$(ms "$t0" "$(now)")
compacted=$(bytes web)
echo "  compaction: $grown bytes after the write, $trimmed after rm + fstrim, $compacted after compact ($compact_ms ms)" >&2

# Export of the seed's VM (its disk and the debian-12 image) and import into a fresh home.
t0=$(now)
"$V" export web -o "$work/web.vmctl.tar.zst" >/dev/null
export_ms=$(ms "$t0" "$(now)")
archive=$(stat -c %s "$work/web.vmctl.tar.zst")
content=$(($(bytes web) + $(du -sb "$VMCTL_HOME/images/debian-12" | cut -f1)))
t0=$(now)
VMCTL_HOME=$work/elsewhere "$V" import "$work/web.vmctl.tar.zst" >/dev/null
import_ms=$(ms "$t0" "$(now)")
echo "  export: $export_ms ms, $archive bytes (of $content); import into a home without the image: $import_ms ms" >&2

c=$(printf '%s\n' "${cold[@]}" | median)
w=$(printf '%s\n' "${warm[@]}" | median)
s=$(printf '%s\n' "${saves[@]}" | median)
z=$(printf '%s\n' "${sizes[@]}" | median)
echo
echo "| measure (web.toml, 1 vCPU, 2G, TCG; median of $N) | result | goal |"
echo "|---|---|---|"
echo "| \`vmctl start\` to HTTP 200, cold boot | $c ms (runs: ${cold[*]}) | - |"
echo "| \`vmctl start\` to HTTP 200, resumed from the saved state | $w ms (runs: ${warm[*]}) | - |"
echo "| resume / cold boot | $(awk -v w="$w" -v c="$c" 'BEGIN {printf "%.2f×", w / c}') | ≤ 0.15× |"
echo "| \`vmctl suspend\` (save and stop) | $s ms | - |"
echo "| saved state on disk | $(awk -v z="$z" 'BEGIN {printf "%.0f MiB", z / 1048576}') (of 2048 MiB RAM) | - |"
mib() { awk -v z="$1" 'BEGIN {printf "%.1f MiB", z / 1048576}'; }
echo "| \`vmctl clone\` (linked: what differs from the image) | $linked_ms ms, $(mib "$linked_bytes") on the host (source's overlay: $(mib "$src_bytes")) | - |"
echo "| \`vmctl clone --full\` (standalone) | $full_ms ms, $(mib "$full_bytes") | - |"
echo "| disk after the guest wrote 256 MiB / deleted it + fstrim / \`vmctl disk compact\` | $(mib "$grown") / $(mib "$trimmed") / $(mib "$compacted") ($compact_ms ms) | - |"
echo "| \`vmctl export\` (VM and debian-12 image, zstd) | $export_ms ms, archive $(mib "$archive") of $(mib "$content") | - |"
echo "| \`vmctl import\` into a home without the image | $import_ms ms | - |"
