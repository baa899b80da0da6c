#!/bin/bash
# Build the vmctl "tiny" test guest: a Debian kernel plus a busybox initramfs
# that serves HTTP and honours the power button (see ./init for the guest side).
#
# Usage:  VMCTL_CACHE_DIR=DIR bash build.sh ARCH OUTDIR
#   ARCH    x86_64 | aarch64
#   OUTDIR  an existing (empty) directory; this script writes exactly:
#             OUTDIR/kernel        image for `qemu-system-ARCH -kernel`
#                                  (x86 bzImage / arm64 Image)
#             OUTDIR/initrd        gzip'd newc cpio, for `-initrd`
#             OUTDIR/packages.txt  one line per .deb used: "name version"
#   VMCTL_CACHE_DIR (required) persistent cache, laid out as:
#             debs/<debian-arch>/  the downloaded .debs (name_version_arch.deb)
#             apt/<debian-arch>/   a private apt state (config, lists, caches)
#                                  reading the host's apt sources and keys
#             tiny/<debian-arch>/  kernels + modules already unpacked from debs
#   VMCTL_TINY_REFRESH=1 (optional) refresh the private package lists first.
#   VMCTL_TINY_PVH=1 (optional, x86_64 only) OUTDIR/kernel is the uncompressed
#             vmlinux (ELF, PVH entry point) instead of the bzImage: QEMU loads
#             it with the same -kernel option (pc/q35) and it reaches userspace
#             ~3 s sooner under TCG (no BIOS real-mode setup, no in-guest xz
#             decompression), but it is ~66 MB instead of ~8 MB.
#
# Sources: the kernel is the linux-image-6.1.0-N-<arch> that the metapackage
# linux-image-<arch> depends on; userspace is busybox-static of the same arch.
# The guest's /init is the file `init` next to this script.
#
# Network use: only when something is missing from the cache (package lists or
# .debs). With the .debs cached, a rebuild is offline and takes about a second.
# No root needed: the host's apt configuration is not modified, and the
# initramfs gets root ownership and /dev/console without fakeroot/mknod.
#
# The guest must be booted with console=ttyS0 (x86_64) or console=ttyAMA0
# (aarch64); the caller appends that to the kernel command line.
#
# Progress goes to stderr as "tiny: ..." lines; on failure the script exits
# non-zero with a "tiny: error: ..." message.

set -euo pipefail

log() { printf 'tiny: %s\n' "$*" >&2; }
die() {
	printf 'tiny: error: %s\n' "$*" >&2
	exit 1
}

# Print the tail of a command's log (after a failure), indented, to stderr.
show_log() { sed -e 's/^/tiny:   | /' <(tail -n 15 "$1") >&2 || true; }

[[ $# -eq 2 ]] || die "usage: VMCTL_CACHE_DIR=DIR bash $0 x86_64|aarch64 OUTDIR"
ARCH=$1
OUTDIR=$2
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INIT_SRC=$SCRIPT_DIR/init

# Per architecture: Debian architecture, kernel flavour and the modules the
# guest needs (their dependencies are added automatically; modules built into
# the kernel are skipped). Power button: x86 ACPI button -> input "Power
# Button"; arm virt: GPIO pl061 (built in) -> gpio-keys. evdev makes the
# /dev/input/eventN device the init waits on. virtio_blk: the VM's disk
# (/dev/vda); virtiofs and 9p: shared folders (9p for the benchmark's
# comparison).
case "$ARCH" in
x86_64)
	DEBARCH=amd64
	WANT_MODULES=(virtio_pci virtio_net virtio_blk evdev button virtiofs 9pnet_virtio 9p)
	;;
aarch64)
	DEBARCH=arm64
	WANT_MODULES=(virtio_pci virtio_net virtio_blk evdev gpio_keys virtiofs 9pnet_virtio 9p)
	;;
*) die "unsupported ARCH '$ARCH' (expected x86_64 or aarch64)" ;;
esac

[[ -n ${VMCTL_CACHE_DIR:-} ]] || die "VMCTL_CACHE_DIR is not set"
[[ -d $VMCTL_CACHE_DIR ]] || die "VMCTL_CACHE_DIR '$VMCTL_CACHE_DIR' is not a directory"
[[ -d $OUTDIR ]] || die "OUTDIR '$OUTDIR' is not a directory"
[[ -f $INIT_SRC ]] || die "guest init not found at $INIT_SRC (it must sit next to build.sh)"
for tool in apt-get apt-cache apt-config dpkg dpkg-deb tar cpio gzip flock sha256sum; do
	command -v "$tool" >/dev/null || die "required tool '$tool' not found"
done

CACHE=$(cd "$VMCTL_CACHE_DIR" && pwd)
OUTDIR=$(cd "$OUTDIR" && pwd)
DEB_DIR=$CACHE/debs/$DEBARCH
APT_DIR=$CACHE/apt/$DEBARCH
UNPACK_DIR=$CACHE/tiny/$DEBARCH
mkdir -p "$DEB_DIR" "$APT_DIR" "$UNPACK_DIR"

# One build per architecture at a time: apt refuses to share its lists and a
# half-written cache entry must never be seen by a concurrent build.
exec 9>"$UNPACK_DIR.lock"
if ! flock -n 9; then
	log "waiting for another build using $UNPACK_DIR"
	flock 9
fi

# Scratch space inside the cache so finished results can be renamed into
# place; scratch dirs left by a killed build of this arch are removed here.
rm -rf "$UNPACK_DIR".tmp.*
WORK=$(mktemp -d "$UNPACK_DIR.tmp.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- private apt state ----------------------------------------------------------
# apt reads $APT_CONFIG first, so it can point Dir::Etc::Parts at a private
# copy of the host's apt.conf.d (symlinks, so proxies and other host settings
# still apply) plus our overrides, read last: own lists/caches/empty dpkg
# status, only the target architecture, no update hooks (they act on the
# host's /var/cache/apt), and only the Packages indexes (no translations or
# AppStream metadata). The host's sources.list(.d) and keyrings are used as is.
setup_apt() {
	local parts=$APT_DIR/apt.conf.d host_parts f target
	mkdir -p "$APT_DIR/state/lists/partial" "$APT_DIR/cache/archives/partial"
	[[ -e $APT_DIR/state/status ]] || : >"$APT_DIR/state/status"
	host_parts=$(env -u APT_CONFIG apt-config shell P Dir::Etc::Parts/d | sed -n "s/^P='\(.*\)'$/\1/p")
	rm -rf "$parts"
	mkdir -p "$parts"
	if [[ -d $host_parts ]]; then
		for f in "$host_parts"/*; do
			[[ -f $f ]] && ln -s "$f" "$parts/"
		done
	fi
	{
		echo '#clear APT::Update::Pre-Invoke;'
		echo '#clear APT::Update::Post-Invoke;'
		echo '#clear APT::Update::Post-Invoke-Success;'
		echo '#clear APT::Architectures;'
		echo "APT::Architecture \"$DEBARCH\";"
		echo "APT::Architectures { \"$DEBARCH\"; };"
		echo 'Acquire::Languages "none";'
		echo "Dir::State \"$APT_DIR/state\";"
		echo "Dir::State::Lists \"$APT_DIR/state/lists\";"
		echo "Dir::State::status \"$APT_DIR/state/status\";"
		echo "Dir::Cache \"$APT_DIR/cache\";"
		echo 'Dir::Cache::pkgcache "pkgcache.bin";'
		echo 'Dir::Cache::srcpkgcache "";'
		# Every index target the host knows except the package lists.
		env -u APT_CONFIG apt-config dump |
			sed -n 's/^Acquire::IndexTargets::\(deb\(-src\)\{0,1\}::[^: ]*\) .*/\1/p' |
			while read -r target; do
				[[ $target == deb::Packages ]] || echo "#clear Acquire::IndexTargets::$target;"
			done
	} >"$parts/zz-vmctl-tiny"
	echo "Dir::Etc::Parts \"$parts\";" >"$APT_DIR/apt.conf"
	export APT_CONFIG=$APT_DIR/apt.conf
}

have_lists() { compgen -G "$APT_DIR/state/lists/*_Packages*" >/dev/null; }

apt_update() {
	log "updating package lists for $DEBARCH (from the host's apt sources)"
	if ! apt-get -q update >"$WORK/apt-update.log" 2>&1; then
		show_log "$WORK/apt-update.log"
		die "apt-get update failed for $DEBARCH"
	fi
	have_lists || {
		show_log "$WORK/apt-update.log"
		die "no $DEBARCH package lists after apt-get update (no network, or the host's apt sources do not serve $DEBARCH?)"
	}
}

# Print a field of the candidate version of a package, from the private lists
# (nothing if the package is unknown).
apt_field() {
	{ apt-cache show --no-all-versions "$1" 2>/dev/null || true; } |
		awk -v k="$2: " 'index($0, k) == 1 && !found { print substr($0, length(k) + 1); found = 1 }'
}

# Canonical cache file name, as `apt-get download` names it (':' -> %3a).
deb_name() { printf '%s_%s_%s.deb' "$1" "${2//:/%3a}" "$DEBARCH"; }

# Resolve name + version of the kernel and busybox from the package lists:
# the kernel is what the candidate linux-image-<arch> depends on, e.g.
# "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)". (Each apt-cache run
# costs ~0.25 s, so ask for the version separately only if it is not pinned.)
resolve_from_lists() {
	local meta dep
	meta=$({ apt-cache show --no-all-versions "linux-image-$DEBARCH" busybox-static 2>/dev/null || true; } |
		awk '/^Package: /{p=$2} p!="" && /^(Version|Depends): /{sub(/: /, "="); print p "|" $0}')
	dep=$(sed -n "s/^linux-image-$DEBARCH|Depends=//p" <<<"$meta" | tr ',' '\n' |
		grep -E "^ *linux-image-6\.1\.0-[0-9]+-$DEBARCH( |$)" | head -n 1) || true
	KPKG=$(awk '{print $1}' <<<"$dep")
	[[ -n $KPKG ]] || return 1
	KVER=$(sed -n 's/.*(= *\([^) ]*\)).*/\1/p' <<<"$dep")
	[[ -n $KVER ]] || KVER=$(apt_field "$KPKG" Version)
	BBPKG=busybox-static
	BBVER=$(sed -n 's/^busybox-static|Version=//p' <<<"$meta")
	[[ -n $KVER && -n $BBVER ]]
}

# Without package lists: use the newest matching .debs already in the cache.
resolve_from_cache() {
	local f p v
	KPKG='' KVER='' BBPKG='' BBVER=''
	for f in "$DEB_DIR"/*.deb; do
		[[ -f $f ]] || continue
		p=$(dpkg-deb -f "$f" Package) || continue
		v=$(dpkg-deb -f "$f" Version) || continue
		if [[ $p =~ ^linux-image-6\.1\.0-[0-9]+-$DEBARCH$ ]]; then
			if [[ -z $KVER ]] || dpkg --compare-versions "$v" gt "$KVER"; then KPKG=$p KVER=$v; fi
		elif [[ $p == busybox-static ]]; then
			if [[ -z $BBVER ]] || dpkg --compare-versions "$v" gt "$BBVER"; then BBPKG=$p BBVER=$v; fi
		fi
	done
	[[ -n $KVER && -n $BBVER && -f $DEB_DIR/$(deb_name "$KPKG" "$KVER") && -f $DEB_DIR/$(deb_name "$BBPKG" "$BBVER") ]]
}

# Make sure $DEB_DIR holds NAME at VERSION; download it otherwise.
fetch_deb() {
	local pkg=$1 ver=$2 file dl
	file=$DEB_DIR/$(deb_name "$pkg" "$ver")
	[[ -f $file ]] && return 0
	log "downloading $pkg $ver"
	dl=$WORK/download
	rm -rf "$dl"
	mkdir -p "$dl"
	if ! (cd "$dl" && apt-get -q download "$pkg=$ver") >"$WORK/apt-download.log" 2>&1; then
		show_log "$WORK/apt-download.log"
		return 1
	fi
	local got=("$dl"/*.deb)
	[[ ${#got[@]} -eq 1 && -f ${got[0]} ]] || die "apt-get download $pkg produced no single .deb"
	mv "${got[0]}" "$file"
}

setup_apt
[[ ${VMCTL_TINY_REFRESH:-0} == 1 ]] && apt_update

log "resolving kernel and busybox packages for $DEBARCH"
if have_lists; then
	resolve_from_lists || {
		apt_update # lists present but incomplete or unreadable: refresh once
		resolve_from_lists || die "cannot find linux-image-$DEBARCH -> linux-image-6.1.0-N-$DEBARCH or busybox-static in the $DEBARCH package lists"
	}
elif resolve_from_cache; then
	log "no package lists cached; using the newest cached .debs"
else
	apt_update
	resolve_from_lists || die "cannot find linux-image-$DEBARCH -> linux-image-6.1.0-N-$DEBARCH or busybox-static in the $DEBARCH package lists"
fi

fetch_all() { fetch_deb "$KPKG" "$KVER" && fetch_deb "$BBPKG" "$BBVER"; }
if ! fetch_all; then
	# Cached lists can be stale (that version left the mirror): refresh, retry.
	apt_update
	resolve_from_lists || die "cannot resolve the packages after refreshing the lists"
	fetch_all || die "cannot download $KPKG $KVER / $BBPKG $BBVER (see the apt output above)"
fi
KDEB=$DEB_DIR/$(deb_name "$KPKG" "$KVER")
BBDEB=$DEB_DIR/$(deb_name "$BBPKG" "$BBVER")
for deb in "$KDEB" "$BBDEB"; do
	a=$(dpkg-deb -f "$deb" Architecture) || die "$deb is not a valid .deb (delete it to re-download)"
	[[ $a == "$DEBARCH" ]] || die "$deb is for architecture '$a', not $DEBARCH"
done

# --- kernel + modules ---------------------------------------------------------------
# Unpacked once per kernel .deb (and module list) into $UNPACK_DIR/<key>/:
#   kernel, config, modules/*.ko (uncompressed), load.list (insmod order),
#   and vmlinux once VMCTL_TINY_PVH=1 has asked for it.
# The key covers the module list and this layout's version, so editing either
# invalidates old entries.
BUNDLE_FORMAT=2
mod_key=$(printf '%s\n' "$BUNDLE_FORMAT" "${WANT_MODULES[@]}" | sha256sum | cut -c1-12)
KBUNDLE=$UNPACK_DIR/${KDEB##*/}
KBUNDLE=${KBUNDLE%.deb}-$mod_key

# Module name as the kernel sees it: basename without .ko[.xz|.zst|.gz], '-' -> '_'.
mod_name() {
	local n=${1##*/}
	n=${n%%.ko*}
	printf '%s' "${n//-/_}"
}

unpack_kernel() {
	local x=$WORK/kernel-deb b=$WORK/bundle kdir f n
	log "unpacking $KPKG (once per kernel version)"
	mkdir -p "$x" "$b/modules"
	dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$x" --wildcards './boot/vmlinuz-*' './boot/config-*' './lib/modules/*' ||
		die "cannot unpack $KDEB"
	local vmlinuz=("$x"/boot/vmlinuz-*)
	[[ -f ${vmlinuz[0]} ]] || die "no boot/vmlinuz-* in $KDEB"
	cp "${vmlinuz[0]}" "$b/kernel"
	cp "$x"/boot/config-* "$b/config" || die "no boot/config-* in $KDEB"
	local kdirs=("$x"/lib/modules/*)
	[[ ${#kdirs[@]} -eq 1 && -d ${kdirs[0]} ]] || die "expected one lib/modules/<version> in $KDEB"
	kdir=${kdirs[0]}

	# Index: module name -> file; names built into the kernel.
	declare -A path=() builtin=() seen=()
	while IFS= read -r f; do
		path[$(mod_name "$f")]=$f
	done < <(find "$kdir" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
	if [[ -f $kdir/modules.builtin ]]; then
		while IFS= read -r f; do builtin[$(mod_name "$f")]=1; done <"$kdir/modules.builtin"
	fi

	# Depth-first: dependencies (from each module's .modinfo "depends=", the
	# data depmod builds modules.dep from; the .deb ships no modules.dep) are
	# listed before the modules that need them.
	add_module() {
		local name=$1 src out dep deps
		[[ -n ${seen[$name]:-} ]] && return 0
		seen[$name]=1
		if [[ -n ${builtin[$name]:-} ]]; then
			log "module $name: built into the kernel"
			return 0
		fi
		src=${path[$name]:-}
		[[ -n $src ]] || die "kernel module $name not found in $KPKG"
		out=$b/modules/$name.ko
		case "$src" in # busybox insmod wants plain .ko files
		*.ko) cp "$src" "$out" ;;
		*.ko.xz) xz -dc "$src" >"$out" ;;
		*.ko.zst) zstd -qdc "$src" >"$out" ;;
		*.ko.gz) gzip -dc "$src" >"$out" ;;
		esac
		deps=$(tr '\0' '\n' <"$out" | sed -n 's/^depends=//p')
		for dep in ${deps//,/ }; do
			add_module "${dep//-/_}"
		done
		echo "$name.ko" >>"$b/load.list"
	}
	: >"$b/load.list"
	for n in "${WANT_MODULES[@]}"; do
		add_module "$n"
	done
	mv "$b" "$KBUNDLE" # atomic: a bundle is either complete or absent
	rm -rf "$x"
}

if [[ ! -f $KBUNDLE/kernel ]]; then
	rm -rf "$KBUNDLE"
	unpack_kernel
	# Drop unpacked kernels of other versions or layouts (the .debs stay).
	for old in "$UNPACK_DIR"/*; do
		[[ $old == "$KBUNDLE" ]] || rm -rf "$old"
	done
fi

# Sanity-check the kernel image format QEMU will be handed.
magic_at() { dd if="$KBUNDLE/kernel" bs=1 skip="$1" count=4 2>/dev/null; }
case "$DEBARCH" in
amd64) [[ $(magic_at 514) == HdrS ]] || die "$KBUNDLE/kernel is not an x86 bzImage" ;;
arm64) [[ $(magic_at 56) == $'ARM\x64' ]] ||
	die "$KBUNDLE/kernel is not an arm64 Image (compressed/EFI zboot kernels are not supported)" ;;
esac

# x86 PVH: the vmlinux ELF is the compressed payload inside the bzImage (the
# way the kernel's scripts/extract-vmlinux finds it: first magic that
# decompresses to an ELF).
make_vmlinux() {
	local k=$KBUNDLE/kernel out=$WORK/vmlinux magic tool off
	grep -q '^CONFIG_PVH=y' "$KBUNDLE/config" || die "$KPKG is not built with CONFIG_PVH; cannot use VMCTL_TINY_PVH=1"
	log "extracting the uncompressed vmlinux for PVH boot (once per kernel version)"
	for magic in xz:$'\xfd7zXZ' zstd:$'(\xb5/\xfd' gzip:$'\x1f\x8b\x08'; do
		tool=${magic%%:*}
		off=$({ LC_ALL=C grep -abo "${magic#*:}" "$k" || true; } | awk -F: 'NR == 1 {print $1}')
		[[ -n $off ]] || continue
		# The payload is followed by other data: decompressors may complain or
		# stop reading early, so judge by the result, not by exit statuses.
		case "$tool" in
		xz) tail -c +"$((off + 1))" "$k" | xz -dcq --single-stream >"$out" 2>/dev/null || true ;;
		*) tail -c +"$((off + 1))" "$k" | "$tool" -dcq >"$out" 2>/dev/null || true ;;
		esac
		# ELF, 64-bit, little-endian, e_machine x86-64 (0x3e)
		if [[ $(dd if="$out" bs=1 count=4 2>/dev/null) == $'\x7fELF' &&
			$(od -An -tx1 -j18 -N1 "$out" | tr -d ' ') == 3e ]]; then
			chmod 0644 "$out"
			mv "$out" "$KBUNDLE/vmlinux"
			return 0
		fi
	done
	die "cannot find the vmlinux payload in $KBUNDLE/kernel"
}

KERNEL_FILE=$KBUNDLE/kernel
if [[ $DEBARCH == amd64 && ${VMCTL_TINY_PVH:-0} == 1 ]]; then
	[[ -f $KBUNDLE/vmlinux ]] || make_vmlinux
	KERNEL_FILE=$KBUNDLE/vmlinux
fi

# --- initramfs ---------------------------------------------------------------------
log "assembling initramfs ($(wc -l <"$KBUNDLE/load.list") modules: $(tr '\n' ' ' <"$KBUNDLE/load.list"))"
R=$WORK/root
mkdir -p "$R"/{bin,dev,proc,sys,tmp,run,www,lib/modules}
dpkg-deb --fsys-tarfile "$BBDEB" | tar -x -O ./bin/busybox >"$R/bin/busybox" ||
	die "no bin/busybox in $BBDEB"
ln -s busybox "$R/bin/sh"
cp "$INIT_SRC" "$R/init"
cp "$KBUNDLE/load.list" "$R/lib/modules/"
while read -r m; do
	cp "$KBUNDLE/modules/$m" "$R/lib/modules/"
done <"$KBUNDLE/load.list"
# Normalise modes (independent of the caller's umask): dirs 0755, files 0644,
# executables 0755, /tmp sticky.
find "$R" -type d -exec chmod 0755 {} +
find "$R" -type f -exec chmod 0644 {} +
chmod 0755 "$R/bin/busybox" "$R/init"
chmod 1777 "$R/tmp"

# Emit one newc cpio header (+ name) for an entry without data.
# Args: name mode(octal) rdev-major rdev-minor
newc_entry() {
	local name=$1 mode=$(($2)) namesize=$((${#1} + 1))
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
		0 "$mode" 0 0 1 0 0 0 0 "$3" "$4" "$namesize" 0 "$name"
	# header (110 bytes) + name + NUL is padded to a multiple of 4
	local pad=$(((4 - (110 + namesize) % 4) % 4))
	head -c "$pad" /dev/zero
}

# The kernel unpacks concatenated archives: first a hand-made one holding the
# /dev/console character device (creating it with mknod would need root), then
# the tree itself, everything owned by root (cpio -R 0:0), timestamps zeroed.
find "$R" -exec touch -h -d @0 {} +
{
	newc_entry dev 040755 0 0
	newc_entry dev/console 020600 5 1
	newc_entry TRAILER!!! 0 0 0
	(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet)
} | gzip -6 -n >"$WORK/initrd" # -9 costs 0.3 s more for 0.5% smaller

# --- outputs --------------------------------------------------------------------------
cp "$KERNEL_FILE" "$WORK/kernel"
printf '%s %s\n' "$KPKG" "$KVER" "$BBPKG" "$BBVER" >"$WORK/packages.txt"
mv "$WORK/kernel" "$WORK/initrd" "$WORK/packages.txt" "$OUTDIR/"
log "done: $OUTDIR/kernel (${KERNEL_FILE##*/} of $KPKG $KVER), $OUTDIR/initrd ($(wc -c <"$OUTDIR/initrd") bytes)"
