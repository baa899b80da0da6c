#!/usr/bin/env bash
# vmctl against libvirt 9.0 on the same host, side by side in one run (issue 15), as a Markdown
# table for BENCHMARKS.md. libvirt runs the domains `vmctl export --format libvirt` wrote, on
# the same disks, one engine at a time:
# - listing 8 VMs: `vmctl list --json` against `virsh list --all` (hyperfine, stopped and running);
# - the seed's VM (vm-configs/web.toml: debian-12, 1 vCPU, 2G, gunicorn): start to its first
#   HTTP 200 (`vmctl start` against `virsh start`), live snapshot create and revert (`vmctl
#   snapshot create/revert` against `virsh snapshot-create-as/snapshot-revert`: both QEMU's
#   internal snapshot with the RAM), and the saved state: save (`vmctl suspend` against `virsh
#   managedsave`) and start from it to HTTP 200.
#
#   sudo scripts/bench-libvirt.sh        # BENCH_N=5 boots and snapshots of each, BENCH_RESUMES=3
#                                        # saves and resumes per boot
#
# libvirtd and virtlogd are started by this script (no systemd here) in a mount namespace of
# their own, where /etc/libvirt/qemu.conf is this run's copy with `dynamic_ownership = 0` (libvirt
# would chown vmctl's files to its QEMU user, and left a backing file chowned on `virsh
# destroy`) and `cgroup_controllers = [ ]` (vmctl makes no cgroup outside systemd either);
# libvirt's QEMU user is given access to the VMs' files by ACL. Both are stopped by their PIDs at
# the end, and every domain defined here is undefined. Refused if a libvirtd already runs.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-5}
R=${BENCH_RESUMES:-3}
[[ $(id -u) -eq 0 ]] || { echo "bench-libvirt: run as root (libvirtd, the image build)" >&2; exit 1; }

scripts/install-deps.sh --bench-libvirt >/dev/null
cargo build --release --locked -q
V=$PWD/target/release/vmctl
VS=(virsh -q -c qemu:///system)
work=$(mktemp -d /tmp/vmctl-bench-libvirt.XXXXXX)
# Run as root, QEMU runs as vmctl-qemu (and libvirt-qemu) and must pass through to the homes.
chmod 0711 "$work"
export VMCTL_HOME=$work/home
export VMCTL_CACHE_DIR=${VMCTL_CACHE_DIR:-$PWD/target/vmctl-test/cache}
mkdir -p "$VMCTL_CACHE_DIR"
domains=() daemons=()
cleanup() {
	set +e
	for d in "${domains[@]}"; do
		"${VS[@]}" destroy "$d" >/dev/null 2>&1
		"${VS[@]}" undefine "$d" --managed-save --snapshots-metadata >/dev/null 2>&1
	done
	for d in $("$V" list --json 2>/dev/null | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)))'); do
		"$V" kill "$d" >/dev/null 2>&1
	done
	for p in "${daemons[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${daemons[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
	rm -rf "$work"
}
trap cleanup EXIT

if "${VS[@]}" version >/dev/null 2>&1; then
	echo "bench-libvirt: a libvirtd already runs here; this script starts (and stops) its own" >&2
	exit 1
fi
cp /etc/libvirt/qemu.conf "$work/qemu.conf"
printf 'dynamic_ownership = 0\ncgroup_controllers = [ ]\nnamespaces = [ ]\n' >>"$work/qemu.conf"
# /dev/kvm is here but runs no guest: libvirt then finds its cached QEMU capabilities stale on
# every call (probed without KVM, KVM "usable" by the device's access) and probes QEMU again,
# ~4 s per `virsh define` or `start`. Its mount namespace sees a root-only file there instead:
# KVM unusable, as vmctl's own probe finds (the domains are type='qemu': TCG either way). That
# mount is why libvirt builds no /dev of its own per domain here (`namespaces = [ ]`: it would
# try to carry the mount over).
install -m 0600 /dev/null "$work/no-kvm"
mkdir -p /run/libvirt
for d in virtlogd libvirtd; do
	unshare -m --propagation private sh -c \
		"mount --bind '$work/qemu.conf' /etc/libvirt/qemu.conf && { [ ! -e /dev/kvm ] || mount --bind '$work/no-kvm' /dev/kvm; } && exec /usr/sbin/$d" \
		>"$work/$d.log" 2>&1 &
	daemons+=($!)
done
for _ in $(seq 100); do "${VS[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
"${VS[@]}" version >/dev/null || { cat "$work/libvirtd.log" >&2; exit 1; }

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%d", m}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", a / b}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Milliseconds from $1 (ns) to the first HTTP 200 on port $2 (a new attempt every 20 ms).
first_200() {
	until [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$2/") == 200 ]]; do
		sleep 0.02
	done
	ms "$1" "$(now)"
}
rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 |"); echo "  $1: vmctl $2, libvirt $3 ($4)" >&2; }

# libvirt's QEMU (libvirt-qemu) may pass vmctl's folders, read the image and the credential and
# write the VM's disk: what `vmctl export --format libvirt` says a host must grant.
grant() { # $1 VM, $2 image
	local img=$VMCTL_HOME/images/$2/x86_64
	setfacl -m u:libvirt-qemu:x "$work" "$VMCTL_HOME" "$VMCTL_HOME/vms" "$VMCTL_HOME/vms/$1" \
		"$VMCTL_HOME/images" "$VMCTL_HOME/images/$2" "$img"
	setfacl -m u:libvirt-qemu:r "$img/disk.qcow2" "$img/kernel" "$img/initrd"
	setfacl -m u:libvirt-qemu:rw "$VMCTL_HOME/vms/$1/disk.qcow2"
	[[ ! -f $VMCTL_HOME/vms/$1/provision.json ]] || setfacl -m u:libvirt-qemu:r "$VMCTL_HOME/vms/$1/provision.json"
}
define() { # $1 VM, $2 image
	"$V" export "$1" --format libvirt -o "$work/$1.xml" 2>/dev/null
	grant "$1" "$2"
	domains+=("$1")
	"${VS[@]}" define "$work/$1.xml" >/dev/null
}
# Waits until libvirt's domain $1 is shut off.
shut_off() { until [[ $("${VS[@]}" domstate "$1") == "shut off" ]]; do sleep 0.1; done; }
# hyperfine's median in ms of each command; prints "vmctl libvirt".
hyper() {
	hyperfine -N --warmup 3 --runs "${BENCH_LIST_RUNS:-40}" --export-json "$work/h.json" "$@" >/dev/null
	python3 -c 'import json,sys; print(" ".join("%.1f" % (r["median"] * 1000) for r in json.load(open(sys.argv[1]))["results"]))' "$work/h.json"
}

# --- 8 VMs (the tiny image): defined and stopped, then running -------------------------------
"$V" image build tiny >/dev/null 2>&1
tports=()
for i in $(seq 8); do
	tports+=("$(free_port)")
	"$V" create "t$i" --image tiny --port "${tports[-1]}:8080" >/dev/null
	define "t$i" tiny
done
read -r a b < <(hyper "$V list --json" "virsh -c qemu:///system list --all")
row "list 8 VMs, stopped (\`vmctl list --json\` / \`virsh list --all\`)" "$a ms" "$b ms" "$(ratio "$a" "$b")" "≤ 1×"
for i in $(seq 8); do "$V" start "t$i" --wait >/dev/null; done
a=$(hyper "$V list --json")
for i in $(seq 8); do "$V" stop "t$i" >/dev/null; done
for i in $(seq 8); do "${VS[@]}" start "t$i" >/dev/null; done
# As `start --wait` did for vmctl's: every guest answers before the listing is timed.
for p in "${tports[@]}"; do first_200 "$(now)" "$p" >/dev/null; done
b=$(hyper "virsh -c qemu:///system list --all")
row "list 8 VMs, running" "$a ms" "$b ms" "$(ratio "$a" "$b")" "≤ 1×"
for i in $(seq 8); do "${VS[@]}" destroy "t$i" >/dev/null; done

# --- the seed's VM (debian-12, 2G) ------------------------------------------------------------
"$V" image build debian-12 >/dev/null 2>&1
ps=$(free_port) ph=$(free_port)
"$V" create web --from vm-configs/web.toml --port "$ps:22" --port "$ph:8080" >/dev/null
# The first boot provisions the guest; the runs below compare boots of a provisioned one.
"$V" start web --wait --timeout 600 >/dev/null
"$V" stop web >/dev/null
define web debian-12

vboot=() lboot=() vsnap=() lsnap=() vrev=() lrev=() vsave=() lsave=() vres=() lres=()
for i in $(seq "$N"); do
	# vmctl: boot, snapshot, revert, suspend, start from the saved state, stop.
	t0=$(now)
	"$V" start web >/dev/null
	vboot+=("$(first_200 "$t0" "$ph")")
	t0=$(now)
	"$V" snapshot create web "s$i" >/dev/null
	vsnap+=("$(ms "$t0" "$(now)")")
	t0=$(now)
	"$V" snapshot revert web "s$i" --force >/dev/null
	vrev+=("$(ms "$t0" "$(now)")")
	"$V" snapshot delete web "s$i" >/dev/null
	for _ in $(seq "$R"); do
		t0=$(now)
		"$V" suspend web >/dev/null
		vsave+=("$(ms "$t0" "$(now)")")
		t0=$(now)
		"$V" start web >/dev/null
		vres+=("$(first_200 "$t0" "$ph")")
		# Its clock set (ready) before the next save, as in libvirt's loop below.
		"$V" start web --wait >/dev/null 2>&1 || true
	done
	"$V" stop web >/dev/null
	# libvirt: the same steps on the same disk (vmctl wrote the credential anew at its start).
	grant web debian-12
	t0=$(now)
	"${VS[@]}" start web >/dev/null
	lboot+=("$(first_200 "$t0" "$ph")")
	t0=$(now)
	"${VS[@]}" snapshot-create-as web "l$i" >/dev/null
	lsnap+=("$(ms "$t0" "$(now)")")
	t0=$(now)
	"${VS[@]}" snapshot-revert web "l$i" >/dev/null
	lrev+=("$(ms "$t0" "$(now)")")
	"${VS[@]}" snapshot-delete web "l$i" >/dev/null
	for _ in $(seq "$R"); do
		t0=$(now)
		"${VS[@]}" managedsave web >/dev/null
		lsave+=("$(ms "$t0" "$(now)")")
		t0=$(now)
		"${VS[@]}" start web >/dev/null
		lres+=("$(first_200 "$t0" "$ph")")
	done
	"${VS[@]}" shutdown web >/dev/null
	shut_off web
	echo "  run $i: boot ${vboot[-1]}/${lboot[-1]} ms, snapshot ${vsnap[-1]}/${lsnap[-1]}, revert ${vrev[-1]}/${lrev[-1]}, save ${vsave[-1]}/${lsave[-1]}, from saved ${vres[-1]}/${lres[-1]} (vmctl/libvirt)" >&2
done
pair() { # $1 label, $2 vmctl array name, $3 libvirt array name, $4 goal
	local -n x=$2 y=$3
	local a b
	a=$(printf '%s\n' "${x[@]}" | median)
	b=$(printf '%s\n' "${y[@]}" | median)
	row "$1" "$a ms (${x[*]})" "$b ms (${y[*]})" "$(ratio "$a" "$b")" "$4"
}
pair "seed VM: start to HTTP 200, cold boot" vboot lboot "≤ 1×"
pair "seed VM: live snapshot create (RAM + disk)" vsnap lsnap "≤ 1×"
pair "seed VM: live snapshot revert" vrev lrev "≤ 1×"
pair "seed VM: save the running VM and stop (\`suspend\` / \`managedsave\`)" vsave lsave "-"
pair "seed VM: start from the saved state to HTTP 200" vres lres "≤ 1×"

echo
echo "| measure (median; $N boots and snapshots of each, alternating, $R saves and resumes per boot; list: hyperfine) | vmctl | libvirt 9.0 | vmctl / libvirt | goal |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
