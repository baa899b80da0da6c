#!/usr/bin/env bash
# Build (once) the Debian bookworm root file system that the systemd tests boot with
# systemd-nspawn (tests/integration/nspawn.rs): systemd, dbus, libpam-systemd (user managers of
# lingering users), QEMU at the host's version, curl, python3, iproute2, procps. Tests never
# write to it: each boots an overlay of it.
#
#   scripts/nspawn-rootfs.sh      # as root; prints the root file system's path on stdout
#
# Environment (all optional):
#   VMCTL_CACHE_DIR        package cache, default target/vmctl-test/cache:
#                            debs/amd64-nspawn/       the .debs of the last build (kept: a
#                                                     rebuild needs no network)
#                            apt/amd64-nspawn/lists/  apt package lists for them
#   VMCTL_NSPAWN_DIR       where the root file systems live, default target/vmctl-test/nspawn:
#                            rootfs -> rootfs-DIGEST  the current one (what tests boot)
#                            rootfs-DIGEST/           one per recipe; older ones are removed
#   VMCTL_NSPAWN_REFRESH=1 refresh the package lists (network) to pick up package updates.
#
# DIGEST covers this script and the QEMU version: a run with an unchanged recipe only says
# "up to date". QEMU is pinned to the version installed on the host (scripts/install-deps.sh),
# or else to the host's apt candidate, and qemu-utils to the same version (apt refuses mixed
# ones). Packages come from the host's Debian bookworm apt sources (bookworm, -updates,
# -security; component main) with the host's proxy settings; the host's apt state is not
# changed, except that missing tools (systemd-container, mmdebstrap) are installed.
set -euo pipefail
umask 022
SELF=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$SELF")/.."

log() { printf 'nspawn-rootfs: %s\n' "$*" >&2; }
die() {
	printf 'nspawn-rootfs: error: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "run this as root (mmdebstrap --mode=root, apt-get, chroot)"
DEBARCH=$(dpkg --print-architecture)
[[ $DEBARCH == amd64 ]] || die "the test root file system is amd64 only (this host is $DEBARCH)"
T0=$SECONDS

# --- host tools -------------------------------------------------------------------------
apt_install() {
	local out
	out=$(mktemp)
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$out" 2>&1; then
		log "apt-get install failed; running apt-get update and retrying"
		apt-get update -q >>"$out" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$out" 2>&1 || {
			tail -n 20 "$out" | sed 's/^/nspawn-rootfs:   | /' >&2
			rm -f "$out"
			die "cannot install $*"
		}
	fi
	rm -f "$out"
}
tools=()
command -v systemd-nspawn >/dev/null || tools+=(systemd-container)
command -v mmdebstrap >/dev/null || tools+=(mmdebstrap)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $KEYRING ]] || tools+=(debian-archive-keyring)
if [[ ${#tools[@]} -gt 0 ]]; then
	log "installing host tools: ${tools[*]}"
	apt_install "${tools[@]}"
fi

# --- recipe -------------------------------------------------------------------------------
QEMU_VERSION=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
if [[ -z $QEMU_VERSION ]]; then
	QEMU_VERSION=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
	[[ -n $QEMU_VERSION && $QEMU_VERSION != "(none)" ]] ||
		die "no qemu-system-x86 on the host nor in its apt sources (run scripts/install-deps.sh)"
fi
PACKAGES=(
	systemd systemd-sysv dbus # init, the system bus (systemctl, logind)
	libpam-systemd            # user@UID.service for lingering users (user units at boot)
	"qemu-system-x86=$QEMU_VERSION" "qemu-utils=$QEMU_VERSION"
	passt # the guests' network
	curl python3 iproute2 procps # what the tests' probes use inside
	libvirt-daemon-system libvirt-clients libxml2-utils acl openssh-client # the libvirt export tests
)
DIGEST=$({
	cat "$SELF"
	printf '%s\n' "$DEBARCH" "${PACKAGES[@]}"
} | sha256sum | cut -c1-16)

CACHE=${VMCTL_CACHE_DIR:-target/vmctl-test/cache}
OUT=${VMCTL_NSPAWN_DIR:-target/vmctl-test/nspawn}
mkdir -p "$CACHE" "$OUT"
CACHE=$(cd "$CACHE" && pwd)
OUT=$(cd "$OUT" && pwd)
# These paths go into mmdebstrap hooks (shell) and overlayfs mount options (commas, colons).
for p in "$CACHE" "$OUT"; do
	[[ $p =~ ^[A-Za-z0-9._/+@-]+$ ]] || die "'$p' must not contain spaces, commas, colons or quotes"
done
ROOTFS=$OUT/rootfs-$DIGEST

exec 9>"$OUT/.lock"
flock -n 9 || {
	log "waiting for another build in $OUT"
	flock 9
}
if [[ -f $ROOTFS/etc/vmctl-test-rootfs && $(readlink "$OUT/rootfs" || true) == "rootfs-$DIGEST" ]]; then
	log "up to date: $ROOTFS (QEMU $QEMU_VERSION)"
	echo "$ROOTFS"
	exit 0
fi

# --- build --------------------------------------------------------------------------------
POOL=$CACHE/debs/$DEBARCH-nspawn
LISTS=$CACHE/apt/$DEBARCH-nspawn/lists
mkdir -p "$POOL/partial" "$LISTS/partial"

# A tree below $OUT, with whatever is still mounted inside it (an interrupted build's binds).
remove_tree() {
	local m
	[[ -e $1 ]] || return 0
	findmnt -rn -o TARGET | { grep -F "$1/" || true; } | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
	rm -rf --one-file-system "$1"
}
for old in "$OUT"/rootfs.tmp.*; do
	[[ -d $old ]] && remove_tree "$old"
done
WORK=$(mktemp -d "$OUT/rootfs.tmp.XXXXXX")
trap 'remove_tree "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ROOT=$WORK/root
MMLOG=$WORK/mmdebstrap.log

# apt sources: the host's bookworm suites (main) as apt resolved them, one-line format.
apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(TARGET_OF)' \
	'Identifier: Packages' 2>/dev/null |
	while read -r uri suite comp type; do
		[[ $type == deb && $comp == main && $suite =~ ^bookworm(-updates|-security)?$ ]] &&
			echo "deb [signed-by=$KEYRING] $uri $suite main"
	done | sort -u >"$WORK/sources.list" || true
[[ -s $WORK/sources.list ]] || die "the host's apt sources have no Debian bookworm entry (component main)"
# Host settings the downloads may need (proxies, a snapshot mirror's Check-Valid-Until).
apt-config dump 2>/dev/null |
	grep -E '^Acquire::((https?|ftp)::Proxy|Check-Valid-Until|Check-Date|Retries|ForceIPv[46])[ :]' \
		>"$WORK/acquire.conf" || true

mm=(
	--mode=root --variant=apt --format=directory
	--aptopt='Apt::Install-Recommends "false"'
	--aptopt='Acquire::Languages "none"'
	--dpkgopt=force-unsafe-io
	--dpkgopt='path-exclude=/usr/share/doc/*'
	--dpkgopt='path-exclude=/usr/share/man/*'
	--dpkgopt='path-exclude=/usr/share/info/*'
	--dpkgopt='path-exclude=/usr/share/locale/*'
	--include="$(
		IFS=,
		echo "${PACKAGES[*]}"
	)"
	# apt downloads into, and installs from, the cache (bind-mounted while mmdebstrap runs).
	--skip=essential/unlink
	--setup-hook='mkdir -p "$1/var/cache/apt/archives" "$1/var/lib/apt/lists" "$1/etc/apt/apt.conf.d"'
	--setup-hook="mount --bind $POOL \"\$1/var/cache/apt/archives\" && mount --bind $LISTS \"\$1/var/lib/apt/lists\""
	--setup-hook="cp $WORK/acquire.conf \"\$1/etc/apt/apt.conf.d/00vmctl-build\""
	--customize-hook='umount "$1/var/cache/apt/archives" "$1/var/lib/apt/lists"; rm -f "$1/etc/apt/apt.conf.d/00vmctl-build"'
)
mmdebstrap_run() { # online|offline
	local skip=()
	[[ $1 == offline ]] && skip=(--skip=update)
	remove_tree "$ROOT"
	mmdebstrap "${mm[@]}" "${skip[@]}" bookworm "$ROOT" "$WORK/sources.list" >"$MMLOG" 2>&1
}
mmdebstrap_failed() {
	tail -n 25 "$MMLOG" | sed 's/^/nspawn-rootfs:   | /' >&2
	die "mmdebstrap failed (sources: $(cut -d' ' -f3- "$WORK/sources.list" | paste -sd';'))"
}
if compgen -G "$LISTS/*_Packages*" >/dev/null && [[ ${VMCTL_NSPAWN_REFRESH:-0} != 1 ]]; then
	log "installing from the package cache (offline; VMCTL_NSPAWN_REFRESH=1 to update): QEMU $QEMU_VERSION"
	if ! mmdebstrap_run offline; then
		log "the cache cannot satisfy the recipe; refreshing the package lists"
		mmdebstrap_run online || mmdebstrap_failed
	fi
else
	log "downloading and installing packages (cache $POOL): QEMU $QEMU_VERSION"
	mmdebstrap_run online || mmdebstrap_failed
fi
log "packages installed ($((SECONDS - T0)) s)"

# The cache keeps exactly the installed .debs (the next build's offline source).
installed=$(dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${Package}_${Version}_${Architecture}.deb\n' |
	sed 's/:/%3a/g')
for f in "$POOL"/*.deb; do
	[[ -f $f ]] || continue
	grep -qxF "${f##*/}" <<<"$installed" || rm -f "$f"
done
for p in qemu-system-x86 qemu-utils; do
	v=$(dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${Version}' "$p")
	[[ $v == "$QEMU_VERSION" ]] || die "$p $v was installed, not $QEMU_VERSION"
done

# --- configuration --------------------------------------------------------------------------
# An empty machine-id: each container gets the id systemd-nspawn --uuid= gives it (the same
# across its reboots, so `journalctl -b -1` finds the previous boot). A persistent journal.
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
# No /etc/hostname (mmdebstrap copies the host's): the container is named by systemd-nspawn -M.
rm -f "$ROOT/etc/hostname"
mkdir -p "$ROOT/var/log/journal"
# Nothing runs behind the tests' backs: no apt or fstrim timers.
for u in apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer \
	e2scrub_reap.service; do
	ln -sfn /dev/null "$ROOT/etc/systemd/system/$u"
done
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/tmp/* "$ROOT"/var/tmp/*
find "$ROOT/var/log" -type f -delete
printf 'recipe %s\nqemu %s\nbuilt by scripts/nspawn-rootfs.sh\n' "$DIGEST" "$QEMU_VERSION" \
	>"$ROOT/etc/vmctl-test-rootfs"

# --- publish --------------------------------------------------------------------------------
rm -rf --one-file-system "$ROOTFS"
mv "$ROOT" "$ROOTFS"
ln -sfn "rootfs-$DIGEST" "$OUT/rootfs.new"
mv -T "$OUT/rootfs.new" "$OUT/rootfs"
for old in "$OUT"/rootfs-*; do
	[[ $old == "$ROOTFS" ]] || rm -rf --one-file-system "$old"
done
log "built $ROOTFS in $((SECONDS - T0)) s ($(du -sm "$ROOTFS" | cut -f1) MB, $(wc -l <<<"$installed") packages)"
echo "$ROOTFS"
