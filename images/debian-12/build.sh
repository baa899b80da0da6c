#!/bin/bash
# Build the vmctl "debian-12" image: a small Debian bookworm "VPS" guest made
# from Debian packages with mmdebstrap — systemd, openssh-server, sudo,
# python3 + gunicorn, nginx — trimmed to boot fast under TCG, with
# vmctl-provision.service for per-VM settings (see ./provision.py).
#
# Usage (as root):  VMCTL_CACHE_DIR=DIR bash build.sh x86_64 OUTDIR
#   OUTDIR  an existing, empty directory; this script writes exactly:
#             OUTDIR/disk.qcow2    uncompressed qcow2, 4 GiB virtual: MBR, one
#                                  bootable ext4 partition (the root fs) with
#                                  EXTLINUX, so it also boots by plain BIOS
#             OUTDIR/kernel        the uncompressed vmlinux (ELF with a PVH
#                                  entry point) for `qemu-system-x86_64 -kernel`
#             OUTDIR/initrd        minimal initramfs for direct boot: the
#                                  virtio/ext4/fw_cfg modules, klibc tools
#                                  and a 20-line init (see make_direct_initrd)
#             OUTDIR/cmdline       kernel command line for direct boot, one
#                                  line, without console= (the caller appends
#                                  console=ttyS0 and systemd.hostname=NAME)
#             OUTDIR/packages.txt  one line per installed package: "name version"
#   VMCTL_CACHE_DIR (required) persistent cache, laid out as:
#             debs/amd64-debian-12/       the .debs of the last build (apt's
#                                         archive dir during the build; older
#                                         versions are pruned after a build)
#             apt/amd64-debian-12/lists/  apt package lists for the above
#             debian-12/amd64.lock        one build per cache at a time
#             debian-12/amd64.tmp.*       scratch (a tmpfs while building)
#   VMCTL_DEBIAN12_REFRESH=1 (optional) refresh the package lists (network)
#             and so pick up package updates. Without it, a build with cached
#             lists and .debs needs no network and installs the same versions;
#             if the cache cannot satisfy the build, the lists are refreshed.
#   VMCTL_DEBIAN12_SOURCES=FILE (optional) apt sources (one-line or deb822)
#             to build from, instead of the host's Debian bookworm sources.
#   VMCTL_DEBIAN12_DISK_SIZE (optional) virtual disk size, default 4G.
#
# Packages come from the host's configured apt sources (the entries for the
# bookworm, bookworm-updates and bookworm-security suites, component main);
# the host's apt configuration and state are not changed, except that missing
# build tools are installed with the host's apt-get at the start (after an
# `apt-get update` if the first attempt fails).
#
# The guest (the full list of changes is the README this script writes to
# /usr/local/lib/vmctl/ in the image): root password
# locked, no SSH host keys and an empty /etc/machine-id in the image (each VM
# gets its own), sshd key-only with root login refused (drop-in
# /etc/ssh/sshd_config.d/01-vmctl.conf), DHCP on every Ethernet NIC with
# systemd-networkd, the ACPI power button handled by systemd-logind, the root
# partition and file system grown to the disk size at boot.
#
# Progress goes to stderr as "debian-12: ..." lines (mmdebstrap's output goes
# to a log whose tail is printed on failure); on failure the script exits
# non-zero with a "debian-12: error: ..." message.

set -euo pipefail
umask 022 # the guest's files get their modes from here (vmctl runs with 077)

log() { printf 'debian-12: %s\n' "$*" >&2; }
die() {
	printf 'debian-12: error: %s\n' "$*" >&2
	exit 1
}
# Print the tail of a command's log (after a failure), indented, to stderr.
show_log() { sed -e 's/^/debian-12:   | /' <(tail -n "${2:-25}" "$1") >&2 || true; }

[[ $# -eq 2 ]] || die "usage: VMCTL_CACHE_DIR=DIR bash $0 x86_64 OUTDIR"
[[ $(id -u) -eq 0 ]] || die "building this image needs root (mmdebstrap, loop mounts)"
ARCH=$1
OUTDIR=$2
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROVISION_SRC=$SCRIPT_DIR/provision.py
# What vmctl puts in its guests (the apps, the sshd drop-in), shared with the cloud-init seeds
# of imported images: images/guest/ in the source tree, guest/ beside this script in a build.
GUEST=$SCRIPT_DIR/guest
[[ -d $GUEST ]] || GUEST=$SCRIPT_DIR/../guest
case "$ARCH" in
x86_64) DEBARCH=amd64 ;;
*) die "unsupported ARCH '$ARCH' (this image is built for x86_64 only)" ;;
esac
[[ $(dpkg --print-architecture) == "$DEBARCH" ]] ||
	die "the build runs the guest's packages in a chroot, so the host must be $DEBARCH (it is $(dpkg --print-architecture))"
[[ -n ${VMCTL_CACHE_DIR:-} ]] || die "VMCTL_CACHE_DIR is not set"
[[ -d $VMCTL_CACHE_DIR ]] || die "VMCTL_CACHE_DIR '$VMCTL_CACHE_DIR' is not a directory"
[[ -d $OUTDIR ]] || die "OUTDIR '$OUTDIR' is not a directory"
[[ -z $(ls -A "$OUTDIR") ]] || die "OUTDIR '$OUTDIR' is not empty"
[[ -f $PROVISION_SRC ]] || die "provision.py not found at $PROVISION_SRC (it must sit next to build.sh)"
[[ -f $GUEST/hello.py ]] || die "the guest files (hello.py, ...) are not in $GUEST"
DISK_SIZE=${VMCTL_DEBIAN12_DISK_SIZE:-4G}
[[ $DISK_SIZE =~ ^[1-9][0-9]*[MG]$ ]] || die "VMCTL_DEBIAN12_DISK_SIZE must look like 4G or 3072M (got '$DISK_SIZE')"
disk_mib=${DISK_SIZE%[MG]}
[[ $DISK_SIZE == *G ]] && disk_mib=$((disk_mib * 1024))
((disk_mib >= 1536 && disk_mib < 2 * 1024 * 1024)) || die "VMCTL_DEBIAN12_DISK_SIZE must be between 1536M and 2047G"
if [[ -n ${VMCTL_DEBIAN12_SOURCES:-} ]]; then
	[[ -f $VMCTL_DEBIAN12_SOURCES ]] || die "VMCTL_DEBIAN12_SOURCES '$VMCTL_DEBIAN12_SOURCES' is not a file"
	VMCTL_DEBIAN12_SOURCES=$(cd "$(dirname "$VMCTL_DEBIAN12_SOURCES")" && pwd)/$(basename "$VMCTL_DEBIAN12_SOURCES")
fi
T0=$SECONDS

# --- build tools --------------------------------------------------------------------
# Fresh machines lack some; install them with the host's apt (the only change
# this script makes to the host).
MBR_BIN=/usr/lib/EXTLINUX/mbr.bin
missing=()
for t in mmdebstrap:mmdebstrap mkfs.ext4:e2fsprogs sfdisk:fdisk extlinux:extlinux \
	qemu-img:qemu-utils losetup:mount findmnt:util-linux xz:xz-utils; do
	command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
[[ -f $MBR_BIN ]] || missing+=(syslinux-common)
if [[ ${#missing[@]} -gt 0 ]]; then
	log "installing build tools: ${missing[*]}"
	tools_log=$(mktemp)
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$tools_log" 2>&1; then
		log "apt-get install failed; updating the host's package lists and retrying"
		{ apt-get update -q || true; } >>"$tools_log" 2>&1
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$tools_log" 2>&1 || {
			show_log "$tools_log"
			die "cannot install the build tools ${missing[*]}"
		}
	fi
	rm -f "$tools_log"
fi
[[ -f $MBR_BIN ]] || die "$MBR_BIN missing after installing syslinux-common"

# --- cache, lock, scratch -----------------------------------------------------------
CACHE=$(cd "$VMCTL_CACHE_DIR" && pwd)
OUTDIR=$(cd "$OUTDIR" && pwd)
# The paths end up in mmdebstrap hook commands and mount tables.
[[ $CACHE =~ ^[A-Za-z0-9._/+@:-]+$ ]] || die "VMCTL_CACHE_DIR '$CACHE' must not contain spaces, quotes or other special characters"
POOL=$CACHE/debs/$DEBARCH-debian-12
LISTS=$CACHE/apt/$DEBARCH-debian-12/lists
STATE=$CACHE/debian-12
mkdir -p "$POOL/partial" "$LISTS/partial" "$STATE"

exec 9>"$STATE/$DEBARCH.lock"
if ! flock -n 9; then
	log "waiting for another build using $STATE"
	flock 9
fi

# Unmount everything below a directory, then delete it (never crossing into
# a file system that is still mounted: the package cache is bind-mounted into
# the chroot while mmdebstrap runs).
remove_tree() {
	local dir=$1 m
	[[ -e $dir ]] || return 0
	for m in $(findmnt -rn -o TARGET | grep -F "$dir" | sort -r); do
		[[ $m == "$dir" || $m == "$dir"/* ]] && { umount "$m" 2>/dev/null || umount -l "$m" || true; }
	done
	rm -rf --one-file-system "$dir"
}
for old in "$STATE/$DEBARCH".tmp.*; do
	[[ -d $old ]] && remove_tree "$old"
done
WORK=$(mktemp -d "$STATE/$DEBARCH.tmp.XXXXXX")
LOOPDEV=
cleanup() {
	[[ -n $LOOPDEV ]] && losetup -d "$LOOPDEV" 2>/dev/null
	remove_tree "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The root tree and the raw disk live in a tmpfs when there is memory for it
# (~1.5 GB at the peak): dpkg's fsyncs then cost nothing and no eatmydata is
# needed.
avail_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
if ((${avail_kib:-0} > 4 * 1024 * 1024)); then
	mount -t tmpfs -o size=$((disk_mib + 1536))m,mode=0755 vmctl-debian-12 "$WORK"
fi
ROOT=$WORK/root
RAW=$WORK/disk.raw
MMLOG=$WORK/mmdebstrap.log
mkdir -p "$WORK/pre" "$WORK/mnt"

# --- apt sources --------------------------------------------------------------------
# The host's bookworm / bookworm-updates / bookworm-security sources (main),
# as apt itself parsed them, written as deb822 for the guest.
SOURCES=$WORK/debian.sources
if [[ -n ${VMCTL_DEBIAN12_SOURCES:-} ]]; then
	cp "$VMCTL_DEBIAN12_SOURCES" "$SOURCES"
else
	keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	env -u APT_CONFIG apt-get indextargets --no-release-info \
		--format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(TARGET_OF)' 'Identifier: Packages' 2>/dev/null |
		awk -v keyring="$keyring" '
			$4 == "deb" && $3 == "main" && $2 ~ /^bookworm(-updates|-security)?$/ {
				if (!(($1, $2) in seen)) { seen[$1, $2] = 1; uris[$1] = uris[$1] " " $2; if (!($1 in order)) { order[$1] = ++n; name[n] = $1 } }
			}
			END {
				for (i = 1; i <= n; i++) {
					printf "%sTypes: deb\nURIs: %s\nSuites:%s\nComponents: main\n", (i > 1 ? "\n" : ""), name[i], uris[name[i]]
					if (system("test -f " keyring) == 0) printf "Signed-By: %s\n", keyring
				}
			}' >"$SOURCES"
	[[ -s $SOURCES ]] ||
		die "the host's apt sources have no Debian bookworm entry (suite bookworm, component main); set VMCTL_DEBIAN12_SOURCES=FILE"
fi

# Host apt settings the downloads may need (proxies, a snapshot mirror's
# Check-Valid-Until ...): given to apt during the build only, not to the guest.
env -u APT_CONFIG apt-config dump 2>/dev/null |
	grep -E '^Acquire::((https?|ftp)::Proxy|Check-Valid-Until|Check-Date|Retries|ForceIPv4|ForceIPv6)[ :]' \
		>"$WORK/pre/host-acquire.conf" || true

# --- files needed before the packages are installed ----------------------------------
# initramfs-tools reads these when the kernel's postinst builds the initramfs:
# only the listed modules (and their dependencies).
mkdir -p "$WORK/pre/etc/initramfs-tools/conf.d" "$WORK/pre/usr/share/initramfs-tools/modules.d"
cat >"$WORK/pre/etc/initramfs-tools/conf.d/vmctl.conf" <<'EOF'
# vmctl: a small initramfs with only the drivers a QEMU guest boots from
# (listed in /usr/share/initramfs-tools/modules.d/vmctl).
# No udev in it (hooks/zz-vmctl-no-udev), no resume device.
MODULES=list
COMPRESS=lz4
RESUME=none
EOF
# No udev in the initramfs: the listed modules are loaded by the initramfs'
# init itself, the kernel's devtmpfs makes the disk nodes, blkid resolves
# root=PARTUUID=. That saves ~2 s under TCG (udevd start, coldplug and
# settle, which also waited ~1.7 s for the PS/2 mouse probe). Delete this
# hook if the root file system ever needs udev (LVM, RAID, ...).
mkdir -p "$WORK/pre/etc/initramfs-tools/hooks"
cat >"$WORK/pre/etc/initramfs-tools/hooks/zz-vmctl-no-udev" <<'EOF'
#!/bin/sh
# vmctl: drop udev from the initramfs (see /etc/initramfs-tools/conf.d/vmctl.conf).
case "$1" in prereqs) exit 0 ;; esac
rm -f "$DESTDIR/scripts/init-top/udev" "$DESTDIR/scripts/init-bottom/udev"
for d in "$DESTDIR" "$DESTDIR/usr"; do
	rm -f "$d/bin/udevadm" "$d/sbin/udevadm" "$d/lib/systemd/systemd-udevd"
	rm -rf "$d/lib/udev"
done
EOF
chmod 0755 "$WORK/pre/etc/initramfs-tools/hooks/zz-vmctl-no-udev"
# /boot/initrd.img (EXTLINUX, kernel updates in the guest) has these modules
# plus the BIOS disk drivers a customize hook adds to
# /etc/initramfs-tools/modules. vmctl's direct boot uses OUTDIR/initrd
# instead (make_direct_initrd below).
cat >"$WORK/pre/usr/share/initramfs-tools/modules.d/vmctl" <<'EOF'
# vmctl: the root disk on virtio-blk, ext4, and fw_cfg (systemd imports the
# vmctl.provision credential from it very early). More disk drivers for
# BIOS boot: /etc/initramfs-tools/modules.
virtio_pci
virtio_blk
ext4
crc32c_generic
qemu_fw_cfg
EOF

# --- root file system ------------------------------------------------------------------
PACKAGES=(
	systemd systemd-sysv udev dbus            # init, logind (power button)
	openssh-server sudo                       # login
	python3 gunicorn nginx                    # apps
	linux-image-amd64 initramfs-tools lz4     # kernel + slim lz4 initramfs
	e2fsprogs procps iproute2 netbase         # fsck, pkill/ps, ip, /etc/services
	qemu-guest-agent                          # vmctl sets the clock after a resume
)
# dpkg leaves out docs, man pages, locales and the kernel modules of hardware
# a QEMU guest does not have (GPUs, sound, wireless, media, InfiniBand, ...).
# The rules stay in /etc/dpkg/dpkg.cfg.d/ so later installs are trimmed too.
DPKG_OPTS=(
	path-exclude=/usr/share/doc/* path-include=/usr/share/doc/*/copyright
	path-exclude=/usr/share/man/* path-exclude=/usr/share/info/*
	path-exclude=/usr/share/locale/* path-include=/usr/share/locale/locale.alias
	path-exclude=/usr/share/lintian/* path-exclude=/usr/share/linda/*
)
for m in /lib/modules /usr/lib/modules; do
	for d in drivers/gpu drivers/media drivers/net/wireless sound drivers/infiniband drivers/iio \
		drivers/staging drivers/comedi drivers/isdn drivers/bluetooth net/bluetooth net/mac80211 \
		net/wireless drivers/net/can drivers/net/wwan drivers/mtd drivers/w1; do
		DPKG_OPTS+=("path-exclude=$m/*/kernel/$d/*")
	done
	# Ethernet: keep Intel's (QEMU's default e1000/e1000e NICs); virtio_net is elsewhere.
	DPKG_OPTS+=("path-exclude=$m/*/kernel/drivers/net/ethernet/*" "path-include=$m/*/kernel/drivers/net/ethernet/intel/*")
done

mm_args=(
	--mode=root --variant=apt --format=directory --verbose
	--aptopt='Apt::Install-Recommends "false"'
	--aptopt='Acquire::Languages "none"'
	--include="$(
		IFS=,
		echo "${PACKAGES[*]}"
	)"
	# The cache is apt's archive dir and lists dir inside the chroot: apt
	# reuses what is there and downloads straight into it.
	--skip=essential/unlink
	--setup-hook='mkdir -p "$1/var/cache/apt/archives" "$1/var/lib/apt/lists"'
	--setup-hook="mount --bind '$POOL' \"\$1/var/cache/apt/archives\""
	--setup-hook="mount --bind '$LISTS' \"\$1/var/lib/apt/lists\""
	--setup-hook="install -D -m 0644 '$WORK/pre/host-acquire.conf' \"\$1/etc/apt/apt.conf.d/00vmctl-build\""
	--essential-hook="tar -C '$WORK/pre' --exclude=./host-acquire.conf -c . | tar -C \"\$1\" -x --no-overwrite-dir"
	--customize-hook='printf "%s\n" "# vmctl: disk drivers for -hda (IDE on pc, AHCI on q35) and virtio-scsi" virtio_scsi sd_mod ata_piix ahci >>"$1/etc/initramfs-tools/modules"'
	--customize-hook='chroot "$1" update-initramfs -u -k all'
	--customize-hook='umount "$1/var/cache/apt/archives" "$1/var/lib/apt/lists"'
	--customize-hook='rm -f "$1/etc/apt/apt.conf.d/00vmctl-build"'
)
for o in "${DPKG_OPTS[@]}"; do mm_args+=(--dpkgopt="$o"); done

run_mmdebstrap() { # $1 = online|offline
	local extra=()
	[[ $1 == offline ]] && extra=(--skip=update)
	remove_tree "$ROOT"
	mmdebstrap "${mm_args[@]}" "${extra[@]}" bookworm "$ROOT" "$SOURCES" >"$MMLOG" 2>&1
}

have_lists() { compgen -G "$LISTS/*_Packages*" >/dev/null; }
sources_summary() {
	awk '/^URIs:/ {u = $2} /^Suites:/ {$1 = ""; print u $0} /^deb / {print $2, $3}' "$SOURCES" | paste -sd ';' -
}
if have_lists && [[ ${VMCTL_DEBIAN12_REFRESH:-0} != 1 ]]; then
	log "installing packages from the cache (offline; VMCTL_DEBIAN12_REFRESH=1 to update)"
	if ! run_mmdebstrap offline; then
		show_log "$MMLOG" 6
		log "the cache cannot satisfy the build; refreshing the package lists and retrying"
		cp "$MMLOG" "$MMLOG.offline"
		run_mmdebstrap online || {
			show_log "$MMLOG"
			die "mmdebstrap failed (no network, or these apt sources do not serve bookworm: $(sources_summary))"
		}
	fi
else
	log "downloading and installing packages (mmdebstrap; cache $POOL)"
	run_mmdebstrap online || {
		show_log "$MMLOG"
		die "mmdebstrap failed (no network, or these apt sources do not serve bookworm: $(sources_summary))"
	}
fi
log "packages installed ($((SECONDS - T0)) s)"

# Keep exactly the installed versions in the cache (it is the offline source
# of the next build).
declare -A keep=()
while read -r f; do keep[${f//:/%3a}]=1; done < <(
	dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${Package}_${Version}_${Architecture}.deb\n'
)
for f in "$POOL"/*.deb; do
	[[ -f $f && -z ${keep[${f##*/}]:-} ]] && rm -f "$f"
done

# --- configuration ----------------------------------------------------------------------
log "configuring the guest"
KVER=$(cd "$ROOT/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n 1)
[[ -n $KVER && -f $ROOT/boot/initrd.img-$KVER ]] || die "no kernel + initramfs in $ROOT/boot"
in_root() { chroot "$ROOT" "$@"; }
put() { # put MODE PATH < content
	install -D -m "$1" /dev/stdin "$ROOT$2"
}

# Identity: no host keys, empty machine-id (not "first boot", so no presets are
# applied), locked root, neutral hostname, QEMU user networking's DNS.
rm -f "$ROOT"/etc/ssh/ssh_host_*
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT/var/lib/systemd/random-seed"
in_root passwd --lock --quiet root
echo debian >"$ROOT/etc/hostname"
put 0644 /etc/hosts <<'EOF'
127.0.0.1	localhost
127.0.1.1	debian
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
# QEMU user networking answers DNS at 10.0.2.3 (no resolver daemon runs).
put 0644 /etc/resolv.conf <<<'nameserver 10.0.2.3'

# Disk: one ext4 partition, found by its PARTUUID (virtio vda1, IDE sda1, ...).
DISK_ID=$(od -An -tx4 -N4 /dev/urandom | tr -d ' ')
FS_UUID=$(cat /proc/sys/kernel/random/uuid)
ROOT_DEV=PARTUUID=$DISK_ID-01
# Mounted rw by the initramfs and not fsck'ed at boot (pass 0): the ext4
# journal makes a killed VM's file system consistent at mount; a full fsck
# run from the initramfs or systemd-fsck-root cost ~2.5 s under TCG.
# cryptomgr.notests: no crypto self-tests at boot (~0.3 s under TCG).
CMDLINE="root=$ROOT_DEV rw quiet cryptomgr.notests"
# vmctl's direct boot: the root disk is the first virtio-blk device, and
# "vmctl.direct" tells units that the device model is vmctl's (see
# vmctl-udev-trigger.service); tsc=reliable: one vCPU whose TSC QEMU derives
# from the host clock, so no clocksource watchdog.
DIRECT_CMDLINE="root=/dev/vda1 rw quiet cryptomgr.notests tsc=reliable vmctl.direct"
put 0644 /etc/fstab <<EOF
# <file system>	<mount point>	<type>	<options>	<dump>	<pass>
UUID=$FS_UUID	/	ext4	errors=remount-ro	0	0
EOF

# SSH: key-only, no root; this drop-in sorts first, and sshd keeps the first
# value it reads. Host key: the ed25519 one vmctl-provision installs.
put 0644 /etc/ssh/sshd_config.d/01-vmctl.conf <"$GUEST/sshd-01-vmctl.conf"

# NICs keep the kernel's names (eth0, ...). A rename to ens3 makes the
# kernel emit a "move" event that udev queues behind the whole coldplug, and
# networkd waits for it: ~3 s later DHCP under TCG.
put 0644 /etc/systemd/network/99-default.link.d/vmctl.conf <<'EOF'
[Link]
NamePolicy=keep kernel
AlternativeNamesPolicy=
EOF

# Network: DHCPv4 on every Ethernet NIC (virtio-net, e1000, ...).
put 0644 /etc/systemd/network/80-vmctl-dhcp.network <<'EOF'
[Match]
Type=ether

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF

# vmctl's direct boot ("vmctl.direct") always has QEMU's user-mode network
# on the first NIC (vmctl's -netdev user, defaults: guest 10.0.2.15/24,
# gateway 10.0.2.2, DNS 10.0.2.3 as in /etc/resolv.conf). vmctl-direct-net
# sets that address right after the NIC driver loads, instead of DHCP from
# networkd, which starts only after udevd and waits for udev to have
# processed the NIC (SSH and HTTP answer ~2 s earlier under TCG); networkd
# leaves that NIC alone. A generic boot (BIOS, other networks) uses DHCP.
put 0644 /etc/systemd/network/10-vmctl-direct.network <<'EOF'
[Match]
Name=eth0
KernelCommandLine=vmctl.direct

[Link]
Unmanaged=yes
EOF
put 0644 /etc/systemd/system/vmctl-direct-net.service <<'EOF'
[Unit]
Description=vmctl: QEMU user-mode network address (direct boot)
Documentation=file:/usr/local/lib/vmctl/README
DefaultDependencies=no
ConditionKernelCommandLine=vmctl.direct
After=systemd-modules-load.service
Before=network.target
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=ip -batch /usr/local/lib/vmctl/direct-net.ip

[Install]
WantedBy=sysinit.target
EOF
put 0644 /usr/local/lib/vmctl/direct-net.ip <<'EOF'
link set lo up
link set eth0 up
address add 10.0.2.15/24 dev eth0
route add default via 10.0.2.2
EOF
# networkd then manages no link (private networks' NICs aside), so
# systemd-networkd-wait-online would wait its whole 2 min for one before
# network-online.target, which nginx wants: the network is up once
# vmctl-direct-net has run (before network.target), so it is skipped there.
put 0644 /etc/systemd/system/systemd-networkd-wait-online.service.d/vmctl-direct.conf <<'EOF'
[Unit]
ConditionKernelCommandLine=!vmctl.direct
EOF

# Provisioning.
install -D -m 0755 "$PROVISION_SRC" "$ROOT/usr/local/lib/vmctl/provision"
put 0644 /etc/systemd/system/vmctl-provision.service <<'EOF'
[Unit]
Description=vmctl per-VM provisioning (hostname, user, SSH keys, app)
Documentation=file:/usr/local/lib/vmctl/provision
# Early (in parallel with sysinit.target, not blocking it) so it is done
# before sshd and the apps can start; all it needs is the root file system.
DefaultDependencies=no
After=local-fs.target
Before=shutdown.target
Conflicts=shutdown.target
Before=ssh.service nginx.service vmctl-app-gunicorn-hello.service vmctl-app-nginx-gunicorn.service
# It writes the private networks' networkd files (in /run/systemd/network).
Before=systemd-networkd.service
Before=systemd-user-sessions.service

[Service]
Type=oneshot
ExecStart=/usr/local/lib/vmctl/provision
# The JSON vmctl passes with -fw_cfg name=opt/io.systemd.credentials/vmctl.provision,file=...
# (or SMBIOS type 11).
LoadCredential=vmctl.provision
StandardOutput=journal+console
StandardError=journal+console
# sshd and the apps wait for it while the whole boot competes for the vCPU.
Nice=-10

[Install]
WantedBy=sysinit.target
EOF

# The VM's own provisioning scripts (the definition's `provision`), once each,
# at the first boot that has them: after vmctl's provisioning (which writes
# /run/vmctl/scripts.json from the credential) and the network, before the
# apps. Its lines on the console tell vmctl how the run went.
put 0755 /usr/local/lib/vmctl/scripts <"$GUEST/vmctl-scripts"
put 0644 /etc/systemd/system/vmctl-scripts.service <<'EOF'
[Unit]
Description=vmctl: the VM's own provisioning scripts
Documentation=file:/usr/local/lib/vmctl/scripts
ConditionPathExists=/run/vmctl/scripts.json
After=vmctl-provision.service vmctl-direct-net.service systemd-networkd.service network.target
Wants=network.target
Before=vmctl-app-gunicorn-hello.service vmctl-app-nginx-gunicorn.service

[Service]
Type=oneshot
ExecStart=/usr/local/lib/vmctl/scripts /run/vmctl/scripts.json
StandardOutput=journal+console
StandardError=journal+console
# A script may install packages: no time limit but the user's.
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF

# Grow the root partition and file system into a larger disk (an overlay of
# 10G over this 4G image, say): a few seconds once, then a no-op check.
put 0755 /usr/local/lib/vmctl/growroot <<'EOF'
#!/bin/sh
# vmctl-growroot: grow the root partition (the last one of an MBR disk) to
# the end of the disk, then its ext4 file system, online.
set -eu
src=$(findmnt -nvo SOURCE /)
part=${src#/dev/}
sys=/sys/class/block/$part
[ -e "$sys/partition" ] || exit 0
disk=$(basename "$(readlink -f "$sys/..")")
n=$(cat "$sys/partition") start=$(cat "$sys/start") size=$(cat "$sys/size")
total=$(cat "/sys/class/block/$disk/size")
new=$(((total - start) / 2048 * 2048))
[ "$new" -le 4294967295 ] || new=$((4294967295 / 2048 * 2048))
[ "$new" -ge $((size + 2048)) ] || exit 0
# Only a DOS label whose entry n starts where the kernel says and is the last.
[ "$(od -An -tx1 -j510 -N2 "/dev/$disk" | tr -d ' ')" = 55aa ] || exit 0
[ "$n" -le 4 ] || exit 0
for i in 1 2 3 4; do
	off=$((446 + 16 * (i - 1)))
	s=$(od -An -tu4 -j$((off + 8)) -N4 "/dev/$disk" | tr -d ' ')
	if [ "$i" -eq "$n" ]; then
		[ "$s" -eq "$start" ] || exit 0
	elif [ "$s" -gt "$start" ]; then
		exit 0
	fi
done
off=$((446 + 16 * (n - 1) + 12))
printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((new & 255)) $((new >> 8 & 255)) $((new >> 16 & 255)) $((new >> 24 & 255)))" |
	dd of="/dev/$disk" bs=1 seek="$off" count=4 conv=notrunc,fsync status=none
resizepart "/dev/$disk" "$n" "$new"
resize2fs "$src" >/dev/null 2>&1
echo "vmctl-growroot: $src grown from $((size / 2048)) MiB to $((new / 2048)) MiB"
EOF
put 0644 /etc/systemd/system/vmctl-growroot.service <<'EOF'
[Unit]
Description=vmctl: grow the root partition and file system to the disk size
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/lib/vmctl/growroot
# Only on otherwise idle CPU: it must not slow down the boot.
CPUSchedulingPolicy=idle
IOSchedulingClass=idle

[Install]
WantedBy=multi-user.target
EOF

# The app: "Hello, World" under gunicorn, as the system user vmctl-app.
in_root useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
	--comment "vmctl app" vmctl-app
put 0644 /usr/local/lib/vmctl/hello.py <"$GUEST/hello.py"
# gunicorn 20.1 imports pkg_resources at startup (~1.2 s of CPU under TCG)
# but only uses it for "egg:" worker classes; this launcher makes that import
# lazy.
put 0755 /usr/local/lib/vmctl/gunicorn <"$GUEST/gunicorn"
in_root python3 -m compileall -q /usr/local/lib/vmctl/hello.py
# The apps' units (they start as soon as provisioning, which enables one, is done).
for unit in vmctl-app-gunicorn-hello.service vmctl-app-nginx-gunicorn.service; do
	put 0644 "/etc/systemd/system/$unit" <"$GUEST/$unit"
done
# Your own app ([app]): its installer (at boot from the VM's app.tar, and by `vmctl app
# deploy`), its units (enabled by provision when the VM has one) and its place.
put 0755 /usr/local/lib/vmctl/app-install <"$GUEST/vmctl-app-install"
for unit in vmctl-app.service vmctl-app-install.service; do
	put 0644 "/etc/systemd/system/$unit" <"$GUEST/$unit"
done
install -d -m 0755 "$ROOT/srv/vmctl-app"
put 0644 /etc/nginx/sites-available/vmctl-app <"$GUEST/nginx-vmctl-app.conf"
rm -f "$ROOT/etc/nginx/sites-enabled/default"
ln -sfn ../sites-available/vmctl-app "$ROOT/etc/nginx/sites-enabled/vmctl-app"

# sshd: no separate `sshd -t` run before each start (~0.5 s of CPU under
# TCG); a bad configuration still fails the start itself.
# sshd starts after logind: its sessions register there, and once SSH
# answers (vmctl start --wait waits for it) logind watches the power button.
# nginx and the apps need only provisioning and start ~1-2 s earlier; an
# ACPI powerdown request before logind runs is lost, and `vmctl stop`
# presses the button again until the guest reacts.
put 0644 /etc/systemd/system/ssh.service.d/vmctl.conf <<'EOF'
[Unit]
After=systemd-logind.service

[Service]
ExecStartPre=
EOF

# CPU priorities during the boot, which is CPU-bound under TCG (the vCPU is
# busy from the kernel's start until sshd and the app run): networkd gates
# all network access (DHCP), so it goes first; udev's coldplug (~370 events,
# up to 15 parallel workers, ~3 s of CPU) only has to finish eventually, so
# it yields. (Measured: DHCP 2-3 s instead of 5-6 s after udevd starts.)
put 0644 /etc/systemd/system/systemd-networkd.service.d/vmctl.conf <<'EOF'
[Service]
Nice=-10
EOF
put 0644 /etc/systemd/system/systemd-udevd.service.d/vmctl.conf <<'EOF'
[Service]
Nice=10
EOF

# Drivers the boot waits for, loaded by systemd-modules-load at its very
# start instead of when udev's coldplug gets to their devices (10-20 s into
# a TCG boot): the NIC (networkd waits for it) and the ACPI power button
# (a powerdown request is lost until logind watches the button).
put 0644 /etc/modules-load.d/vmctl.conf <<'EOF'
# vmctl: loaded early (see /usr/local/lib/vmctl/README).
virtio_net
button
evdev
virtio_console
EOF

# The guest agent (qemu-ga, on the virtio-serial port vmctl gives debian-12
# guests): vmctl uses it to set the clock of a guest resumed from its saved
# state (guest-set-time) and may freeze file systems for a consistent copy.
# What would let the host side run commands, write files or change users in
# the guest is blocked.
put 0644 /etc/systemd/system/qemu-guest-agent.service.d/vmctl.conf <<'EOF'
[Service]
ExecStart=
ExecStart=-/usr/sbin/qemu-ga --block-rpcs=guest-exec,guest-exec-status,guest-file-open,guest-file-close,guest-file-read,guest-file-write,guest-file-seek,guest-file-flush,guest-shutdown,guest-suspend-disk,guest-suspend-ram,guest-suspend-hybrid,guest-set-vcpus,guest-set-user-password,guest-set-memory-blocks,guest-ssh-add-authorized-keys,guest-ssh-remove-authorized-keys
EOF

# Journal in memory only (Debian's default without /var/log/journal, made
# explicit), so the flush to /var at boot is pointless: it sat on the path to
# sysinit.target. For a persistent journal: set Storage=persistent here and
# `systemctl unmask systemd-journal-flush`.
put 0644 /etc/systemd/journald.conf.d/vmctl.conf <<'EOF'
[Journal]
Storage=volatile
EOF

# Drivers for emulated hardware a headless VM does not use; loading and
# probing them cost boot time under TCG. Blacklisting only stops loading by
# alias (udev); `modprobe NAME` still works (e.g. kvm_intel for nested VMs).
put 0644 /etc/modprobe.d/vmctl-blacklist.conf <<'EOF'
# vmctl: not loaded automatically; `modprobe NAME` still works.
blacklist floppy
blacklist pcspkr
blacklist psmouse
blacklist serio_raw
blacklist joydev
blacklist i2c_piix4
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
blacklist ccp
EOF
# udev rules for hardware a VM does not have (each rule file is parsed at
# udevd start and matched against every coldplugged device).
mkdir -p "$ROOT/etc/udev/rules.d"
for r in 60-autosuspend 60-cdrom_id 60-drm 60-evdev 60-fido-id 60-infiniband 60-persistent-alsa \
	60-persistent-input 60-persistent-storage-tape 60-persistent-v4l 60-sensor 70-camera \
	70-joystick 70-mouse 70-touchpad 75-probe_mtd 78-sound-card; do
	ln -sfn /dev/null "$ROOT/etc/udev/rules.d/$r.rules"
done

# udev coldplug (Debian's command plus exclusions): every device, driver
# and module is one event through all rules (~6 ms of CPU each under TCG,
# plus worker forks). Skipped: the 63 virtual consoles, their vcs devices and
# the memory blocks (hotplug only), ~110 of ~480 events. Serial ports and the
# tty/console/ptmx nodes are still triggered.
put 0644 /etc/systemd/system/systemd-udev-trigger.service.d/vmctl.conf <<'EOF'
[Unit]
ConditionKernelCommandLine=!vmctl.direct
[Service]
ExecStart=
ExecStart=-udevadm trigger --type=all --action=add --prioritized-subsystem=module,block,tpmrm,net,input --subsystem-nomatch=tty --subsystem-nomatch=vc --subsystem-nomatch=memory
ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match=tty --sysname-match=ttyS* --sysname-match=hvc* --sysname-match=console --sysname-match=tty --sysname-match=ptmx
EOF
# vmctl's direct boot (kernel command line "vmctl.direct") has a known
# device model: virtio-blk disk, virtio-net NIC, serial port; the initramfs
# and systemd-modules-load load every driver it needs. Its coldplug replays
# only the devices that appeared before udevd listened and that units wait
# for: block devices (dev-vda1.device), NICs (networkd), input devices (the
# power button logind watches) and ttyS0 (its getty), ~20 events instead of
# ~370 (saves ~1-2 s of the one vCPU). A generic boot (BIOS, unknown
# hardware) keeps the full coldplug above, which also loads drivers by
# modalias.
put 0644 /etc/systemd/system/vmctl-udev-trigger.service <<'EOF'
[Unit]
Description=vmctl: coldplug the devices of vmctl's direct boot
Documentation=file:/usr/local/lib/vmctl/README
DefaultDependencies=no
ConditionKernelCommandLine=vmctl.direct
Wants=systemd-udevd.service
After=systemd-udevd-kernel.socket systemd-udevd-control.socket
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match=block --subsystem-match=net --subsystem-match=input --subsystem-match=virtio-ports
ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match=tty --sysname-match=ttyS0 --sysname-match=console --sysname-match=tty --sysname-match=ptmx

[Install]
WantedBy=sysinit.target
EOF

# udev runs systemd-sysctl for each new NIC to apply per-interface sysctl.d
# settings; this image has none (Debian ships no 50-default.conf), and the
# exec (~0.5 s of CPU under TCG) delays udev's "NIC ready" that networkd
# waits for. An /etc copy of 99-systemd.rules without that rule overrides
# the packaged one (drop it when adding net.ipv4.conf.<NIC>.* settings).
[[ -f $ROOT/lib/udev/rules.d/99-systemd.rules ]] || die "no /lib/udev/rules.d/99-systemd.rules in the guest"
{
	echo "# vmctl: /lib/udev/rules.d/99-systemd.rules without the systemd-sysctl run per new NIC"
	echo "# (see /usr/local/lib/vmctl/README)."
	grep -v 'RUN+="/lib/systemd/systemd-sysctl' "$ROOT/lib/udev/rules.d/99-systemd.rules"
} | put 0644 /etc/udev/rules.d/99-systemd.rules
grep -q 'RUN+="/lib/systemd/systemd-sysctl' "$ROOT/etc/udev/rules.d/99-systemd.rules" && die "99-systemd.rules: the systemd-sysctl rule is still there"

# Units: what runs at boot.
in_root systemctl enable --quiet systemd-networkd.service vmctl-provision.service vmctl-growroot.service \
	vmctl-udev-trigger.service vmctl-direct-net.service vmctl-scripts.service
in_root systemctl disable --quiet nginx.service
# Periodic jobs and scrubbers that cost boot time or CPU and do nothing useful
# in a small VM (e2scrub_reap alone: ~23 s of a TCG boot).
in_root systemctl mask --quiet e2scrub_reap.service e2scrub_all.timer e2scrub_all.service \
	apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
	dpkg-db-backup.timer fstrim.timer
in_root systemctl disable --quiet systemd-pstore.service
# Each unit or generator systemd starts is an exec of a binary linked
# against the 3.5 MB libsystemd-shared: ~0.1 s of CPU each under TCG, all
# competing for the one vCPU during boot. Not needed in this guest: the
# debug/tracing/hugepages/mqueue/fuse/configfs/binfmt mounts, modprobe@ for
# drivers that are loaded on demand anyway (drm, dm_mod, loop, fuse,
# configfs), ip= on the kernel command line, and the generators for GPT
# auto-discovery, LUKS/verity/integrity, hibernation, boot counting,
# offline updates, /etc/rc.local and systemd.run=. A getty on tty1 is
# useless too: nobody has a password (the serial console keeps its getty).
in_root systemctl mask --quiet dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount \
	sys-kernel-tracing.mount sys-fs-fuse-connections.mount sys-kernel-config.mount \
	proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount systemd-binfmt.service \
	modprobe@drm.service modprobe@dm_mod.service modprobe@loop.service modprobe@fuse.service \
	modprobe@configfs.service systemd-network-generator.service systemd-journal-flush.service \
	systemd-update-utmp.service systemd-update-utmp-runlevel.service
rm -f "$ROOT/etc/systemd/system/getty.target.wants/getty@tty1.service"
mkdir -p "$ROOT/etc/systemd/system-generators"
for g in systemd-gpt-auto-generator systemd-cryptsetup-generator systemd-veritysetup-generator \
	systemd-integritysetup-generator systemd-hibernate-resume-generator systemd-bless-boot-generator \
	systemd-system-update-generator systemd-rc-local-generator systemd-run-generator; do
	ln -sfn /dev/null "$ROOT/etc/systemd/system-generators/$g"
done
# /etc and /var are up to date with /usr: the ConditionNeedsUpdate= units
# (ldconfig, hwdb, catalog, sysusers) need not run on each VM's first boot.
touch "$ROOT/etc/.updated" "$ROOT/var/.updated"

# Boot loader for BIOS boot (EXTLINUX); direct boot uses OUTDIR/kernel + initrd.
mkdir -p "$ROOT/boot/extlinux"
put 0644 /boot/extlinux/extlinux.conf <<EOF
# vmctl debian-12: BIOS boot. /vmlinuz and /initrd.img follow kernel upgrades.
DEFAULT debian
TIMEOUT 0
PROMPT 0
LABEL debian
	LINUX /vmlinuz
	INITRD /initrd.img
	APPEND $CMDLINE console=tty0 console=ttyS0,115200
EOF

put 0644 /usr/local/lib/vmctl/README <<'EOF'
This is vmctl's "debian-12" image (images/debian-12/build.sh in vmctl):
Debian bookworm from Debian packages, changed as follows.

Per VM, on every boot: vmctl-provision.service runs ./provision, which reads
the systemd credential vmctl.provision (JSON from the host: hostname, login
user + SSH keys, SSH host key, app) -- see the comment at its top.
./growroot (vmctl-growroot.service) grows the root partition and file system
to the disk size.
./scripts (vmctl-scripts.service) runs the VM's own provisioning scripts, each
once (recorded in /var/lib/vmctl/scripts.done; output also in
/var/log/vmctl/scripts.log), when provision wrote /run/vmctl/scripts.json.

Apps (enabled by provision): vmctl-app-gunicorn-hello.service (gunicorn on
0.0.0.0:8080 running ./hello.py through the ./gunicorn launcher), or
vmctl-app-nginx-gunicorn.service + nginx.service (site vmctl-app on :8080,
gunicorn on unix:/run/vmctl-app/gunicorn.sock).

Trimmed for a fast boot under QEMU TCG (each item names its file):
- sshd: key-only, no root (/etc/ssh/sshd_config.d/01-vmctl.conf); no
  `sshd -t` before the start (ssh.service.d/vmctl.conf).
- root is mounted rw without fsck (/etc/fstab pass 0); journal in memory
  (/etc/systemd/journald.conf.d/vmctl.conf; systemd-journal-flush masked).
- initramfs: only the listed modules, no udev (/etc/initramfs-tools/,
  /usr/share/initramfs-tools/modules.d/vmctl), plus IDE/AHCI/virtio-scsi for
  BIOS boot. vmctl's direct boot uses its own (~3 MB, uncompressed): the
  virtio-blk/ext4/fw_cfg modules and an init that mounts root=/dev/vda1.
- direct boot ("vmctl.direct" on the kernel command line): coldplug of the
  block, net, input, virtio-ports devices and ttyS0 only
  (vmctl-udev-trigger.service).
- qemu-guest-agent on virtio-serial port org.qemu.guest_agent.0, with the
  RPCs that run commands, write files or change users blocked
  (qemu-guest-agent.service.d/vmctl.conf).
- masked units and generators: `systemctl list-unit-files --state=masked`,
  /etc/systemd/system-generators/.
- udev: no coldplug of virtual consoles/memory blocks
  (systemd-udev-trigger.service.d/vmctl.conf), rules for absent hardware
  masked (/etc/udev/rules.d/), no systemd-sysctl run per NIC
  (/etc/udev/rules.d/99-systemd.rules), NICs keep kernel names
  (/etc/systemd/network/99-default.link.d/vmctl.conf).
- drivers for emulated hardware not used: /etc/modprobe.d/vmctl-blacklist.conf;
  loaded early: /etc/modules-load.d/vmctl.conf.
- priorities at boot: provision and networkd nice -10, udevd nice 10
  (drop-ins); growroot runs at idle priority.
- sshd starts after logind (power button handled once SSH answers).
- no docs, man pages, locales or GPU/sound/wireless/... kernel modules
  (/etc/dpkg/dpkg.cfg.d/99mmdebstrap).
- DHCPv4 on every Ethernet NIC (/etc/systemd/network/80-vmctl-dhcp.network),
  DNS 10.0.2.3 (QEMU user networking) in /etc/resolv.conf. Direct boot: the
  user-mode network's static address instead (vmctl-direct-net.service,
  ./direct-net.ip; /etc/systemd/network/10-vmctl-direct.network).
- the apps do not wait for sysinit.target/basic.target, only provisioning.
EOF

# Leftovers of the build.
rm -f "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/tmp/* "$ROOT"/var/tmp/*
find "$ROOT/var/log" -type f -delete

# --- outputs: kernel, initrd, disk ------------------------------------------------------
# The direct-boot initramfs: initramfs-tools' init (busybox scripts, blkid,
# modprobe, fsck) took ~1.7 s from "Run /init" to systemd under TCG. vmctl
# knows its device model, so this one is the listed modules in dependency
# order, klibc's tools (already in the guest for initramfs-tools) and an
# init that loads them, mounts root= (a /dev path) and execs /sbin/init. An
# uncompressed cpio: the kernel does not spend TCG time decompressing it.
make_direct_initrd() { # $1 = output file
	local d=$WORK/initrd.d kmod=$ROOT/lib/modules/$KVER n=0 m klibc
	rm -rf "$d"
	mkdir -p "$d"/{bin,lib,dev,proc,root,mod}
	klibc=$(compgen -G "$ROOT/usr/lib/klibc-*.so" | head -n 1) || die "klibc is not installed in the guest"
	cp "$klibc" "$d/lib/"
	for m in sh cat insmod mount run-init; do
		cp "$ROOT/usr/lib/klibc/bin/$m" "$d/bin/" || die "klibc-utils has no $m"
	done
	# modules.dep lists each module's dependencies, deepest last.
	for m in $(awk -v want="virtio_pci virtio_blk crc32c_generic ext4 qemu_fw_cfg" '
		BEGIN { split(want, w, " ") }
		{ k = $1; sub(/:$/, "", k); dep[k] = ""; for (i = NF; i > 1; i--) dep[k] = dep[k] " " $i
		  n = k; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n); path[n] = k }
		function add(k,   a, i, c) { if (k in seen) return; c = split(dep[k], a, " "); for (i = 1; i <= c; i++) add(a[i]); seen[k] = 1; print k }
		END { for (i = 1; i <= length(w); i++) { if (!(w[i] in path)) { print "missing:" w[i]; continue } add(path[w[i]]) } }
	' "$kmod/modules.dep"); do
		[[ $m != missing:* ]] || die "kernel $KVER has no module ${m#missing:}"
		n=$((n + 1))
		case $m in
		*.ko) cp "$kmod/$m" "$d/mod/$(printf %02d "$n")-${m##*/}" ;;
		*.ko.xz) xz -dc "$kmod/$m" >"$d/mod/$(printf %02d "$n")-$(basename "$m" .xz)" ;;
		*) die "unsupported module file $m" ;;
		esac
	done
	cat >"$d/init" <<'EOF'
#!/bin/sh
# vmctl's direct-boot initramfs (images/debian-12/build.sh): load the drivers
# of the root disk, mount root= (a /dev path) and hand over to systemd.
fail() {
	echo "vmctl-initrd: $*" >/dev/console
	exec sh </dev/console >/dev/console 2>&1
}
mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"
mount -t proc proc /proc || fail "cannot mount /proc"
root= opt=rw
for a in $(cat /proc/cmdline); do
	case $a in root=*) root=${a#root=} ;; ro) opt=ro ;; rw) opt=rw ;; esac
done
for m in /mod/*.ko; do
	insmod "$m" || fail "cannot load $m"
done
case $root in /dev/*) ;; *) fail "root=$root: this initramfs needs root=/dev/..." ;; esac
[ -b "$root" ] || fail "no root device $root"
mount -t ext4 -o "$opt" "$root" /root || fail "cannot mount $root"
mount -t devtmpfs devtmpfs /root/dev || fail "cannot mount /dev in the root file system"
exec run-init /root /sbin/init "$@"
EOF
	chmod 0755 "$d/init"
	(cd "$d" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 >"$1") || die "cannot write the initramfs"
}

# The vmlinux ELF (PVH entry point) is the compressed payload inside the
# bzImage: the first magic that decompresses to an x86-64 ELF.
log "extracting the PVH vmlinux from vmlinuz-$KVER"
grep -q '^CONFIG_PVH=y' "$ROOT/boot/config-$KVER" || die "kernel $KVER is not built with CONFIG_PVH"
extract_vmlinux() {
	local k=$1 out=$2 magic tool off
	for magic in xz:$'\xfd7zXZ' zstd:$'(\xb5/\xfd' gzip:$'\x1f\x8b\x08'; do
		tool=${magic%%:*}
		off=$({ LC_ALL=C grep -abo "${magic#*:}" "$k" || true; } | awk -F: 'NR == 1 {print $1}')
		[[ -n $off ]] || continue
		case "$tool" in
		xz) tail -c +"$((off + 1))" "$k" | xz -dcq --single-stream >"$out" 2>/dev/null || true ;;
		*) tail -c +"$((off + 1))" "$k" | "$tool" -dcq >"$out" 2>/dev/null || true ;;
		esac
		[[ $(head -c 4 "$out") == $'\x7fELF' && $(od -An -tx1 -j18 -N1 "$out" | tr -d ' ') == 3e ]] && return 0
	done
	return 1
}
extract_vmlinux "$ROOT/boot/vmlinuz-$KVER" "$WORK/kernel" || die "cannot find the vmlinux payload in vmlinuz-$KVER"
make_direct_initrd "$WORK/initrd"
printf '%s\n' "$DIRECT_CMDLINE" >"$WORK/cmdline"
dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${db:Status-Abbrev} ${Package} ${Version}\n' |
	awk '$1 == "ii" {print $2, $3}' | LC_ALL=C sort >"$WORK/packages.txt"

log "making the disk: MBR, ext4 root partition, EXTLINUX ($DISK_SIZE)"
part_start=2048 # sectors (1 MiB)
truncate -s "${disk_mib}M" "$RAW"
printf 'label: dos\nlabel-id: 0x%s\nstart=%d, type=83, bootable\n' "$DISK_ID" "$part_start" |
	sfdisk --quiet --no-reread --no-tell-kernel "$RAW" >"$WORK/sfdisk.log" 2>&1 || {
	show_log "$WORK/sfdisk.log"
	die "sfdisk failed"
}
# Inode tables are zeroed here (lazy_itable_init=0), so the guest kernel has
# no background ext4lazyinit work at boot.
mkfs.ext4 -q -F -L root -U "$FS_UUID" -d "$ROOT" \
	-E "offset=$((part_start * 512)),lazy_itable_init=0,lazy_journal_init=1" \
	"$RAW" "$((disk_mib - 1))M" >"$WORK/mkfs.log" 2>&1 || {
	show_log "$WORK/mkfs.log"
	die "mkfs.ext4 -d failed"
}
LOOPDEV=$(losetup --find --show --offset $((part_start * 512)) --sizelimit $(((disk_mib - 1) * 1024 * 1024)) "$RAW") ||
	die "cannot attach a loop device (needed to install EXTLINUX)"
mount -t ext4 "$LOOPDEV" "$WORK/mnt" || die "cannot mount the new root file system ($LOOPDEV)"
if ! extlinux --install "$WORK/mnt/boot/extlinux" >"$WORK/extlinux.log" 2>&1; then
	umount "$WORK/mnt"
	show_log "$WORK/extlinux.log"
	die "extlinux --install failed"
fi
umount "$WORK/mnt"
losetup -d "$LOOPDEV"
LOOPDEV=
dd if="$MBR_BIN" of="$RAW" bs=440 count=1 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$RAW" "$WORK/disk.qcow2"

mv "$WORK/disk.qcow2" "$WORK/kernel" "$WORK/initrd" "$WORK/cmdline" "$WORK/packages.txt" "$OUTDIR/"
log "done in $((SECONDS - T0)) s: disk.qcow2 $(du -m --apparent-size "$OUTDIR/disk.qcow2" | cut -f1) MB," \
	"kernel (vmlinux $KVER) $(du -m "$OUTDIR/kernel" | cut -f1) MB, initrd $(du -k "$OUTDIR/initrd" | cut -f1) KB," \
	"$(wc -l <"$OUTDIR/packages.txt") packages; cmdline: $DIRECT_CMDLINE"
