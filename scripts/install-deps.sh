#!/usr/bin/env bash
# Install every system package vmctl and its tests need on a Debian 12 machine, idempotently.
#
#   scripts/install-deps.sh          # QEMU for x86_64 and aarch64 guests, qemu-img, passt (the guest
#                                    # network), image build tools
#   scripts/install-deps.sh --test   # also what the tests use: cloud-init (schema checks), python3-venv,
#                                    # libvirt-clients + libxml2-utils (virt-xml-validate of exported
#                                    # domains),
#                                    # systemd-container + mmdebstrap (scripts/nspawn-rootfs.sh),
#                                    # prometheus (promtool and a real scrape of `vmctl metrics`)
#   scripts/install-deps.sh --bench-libvirt  # also libvirtd, acl and hyperfine for
#                                    # scripts/bench-libvirt.sh (services are not started)
#
# QEMU comes from Debian: qemu-system-x86 and qemu-utils must be the same release (an image may ship
# a newer qemu-utils from elsewhere, which Debian's qemu-system-x86 would then conflict with), so
# qemu-utils and qemu-block-extra are pinned to qemu-system-x86's candidate version.
set -euo pipefail

need=(qemu-system-x86 qemu-system-arm qemu-utils passt cpio curl ca-certificates openssh-client dosfstools mtools
	libseccomp-dev libcap-ng-dev pkg-config)
extra=()
case ${1:-} in
--test) extra=(cloud-init python3-venv systemd-container mmdebstrap libvirt-clients libxml2-utils prometheus man-db) ;;
--bench-libvirt) extra=(libvirt-daemon-system libvirt-clients acl hyperfine) ;;
esac
need+=("${extra[@]}")
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
# qemu-img must match qemu-system's version.
if [[ ${#missing[@]} -eq 0 ]]; then
	sys=$(dpkg-query -W -f='${Version}' qemu-system-x86)
	img=$(dpkg-query -W -f='${Version}' qemu-utils)
	[[ $sys == "$img" ]] || missing+=(qemu-utils)
fi
if [[ ${#missing[@]} -eq 0 ]]; then
	echo "install-deps: all system packages present"
else
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: missing packages: ${missing[*]}; run this script as root (it uses apt-get)" >&2
		exit 1
	fi
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
	[[ -n $v && $v != "(none)" ]] || { echo "install-deps: no qemu-system-x86 package in the apt sources" >&2; exit 1; }
	apt-get install -y -q --allow-downgrades --no-install-recommends \
		"qemu-system-x86=$v" "qemu-utils=$v" "qemu-block-extra=$v" \
		qemu-system-arm ipxe-qemu seabios passt cpio curl ca-certificates \
		openssh-client dosfstools mtools libseccomp-dev libcap-ng-dev pkg-config "${extra[@]}"
fi

if ! command -v cargo >/dev/null; then
	if [[ -x $HOME/.cargo/bin/cargo ]]; then
		echo "install-deps: cargo is in ~/.cargo/bin; add it to PATH" >&2
	else
		echo "install-deps: no Rust toolchain; install one with rustup (https://rustup.rs)" >&2
	fi
	exit 1
fi
# Shared folders need the Rust virtiofsd (1.11 or later: it gives what the guest writes to the
# folder's owner); Debian 12 has only QEMU's C one. Built once from crates.io (~1 min).
VIRTIOFSD_VERSION=1.14.0
if [[ $(/usr/local/bin/virtiofsd --version 2>/dev/null) != "virtiofsd $VIRTIOFSD_VERSION" ]]; then
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: virtiofsd $VIRTIOFSD_VERSION is missing from /usr/local/bin; run this script as root" >&2
		exit 1
	fi
	echo "install-deps: building virtiofsd $VIRTIOFSD_VERSION into /usr/local/bin"
	cargo install -q virtiofsd --version "$VIRTIOFSD_VERSION" --locked --root /usr/local
fi
qemu-system-x86_64 --version | head -1
qemu-img --version | head -1
/usr/local/bin/virtiofsd --version
