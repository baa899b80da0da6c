#!/usr/bin/env bash
# Build the Debian package vmctl_VERSION_ARCH.deb: the binary as /usr/bin/vmctl, vmctl-generator
# linked into systemd's generator folders, completions for bash, zsh and fish, a manual page per
# subcommand, the unit templates, the Grafana dashboard, the docs and example definitions.
# Install it with `apt install ./vmctl_*.deb`.
#
#   scripts/package.sh                         # release build, into target/debian/
#   scripts/package.sh --binary PATH --out DIR # package a binary built elsewhere (the tests)
#
# Removal: `apt remove` takes the files above away; `apt purge` too, and keeps /var/lib/vmctl
# (your VMs' disks and definitions: data the package did not make; `rm -rf /var/lib/vmctl`
# removes it) and the vmctl-qemu system user (files may still be owned by it), as Debian policy
# asks of data and users a package did not create in its maintainer scripts.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="" out=$PWD/target/debian
while [[ $# -gt 0 ]]; do
	case $1 in
	--binary) bin=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	*) echo "package: unknown argument $1 (--binary PATH, --out DIR)" >&2; exit 2 ;;
	esac
done
if [[ -z $bin ]]; then
	cargo build --release --locked -q
	bin=target/release/vmctl
fi
[[ -x $bin ]] || { echo "package: $bin is not an executable" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d /tmp/vmctl-package.XXXXXX)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"

# Stripped, as Debian ships binaries (the debug build the tests package is ~100 MB with symbols).
install -D -s -m 0755 "$bin" "$root/usr/bin/vmctl"
for scope in system user; do
	mkdir -p "$root/usr/lib/systemd/$scope-generators"
	ln -s ../../../bin/vmctl "$root/usr/lib/systemd/$scope-generators/vmctl-generator"
done
# Completions and manual pages, from the binary's own command line.
v=$root/usr/bin/vmctl
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
	"$root/usr/share/fish/vendor_completions.d" "$root/usr/share/man/man1"
"$v" completions bash --completer vmctl >"$root/usr/share/bash-completion/completions/vmctl"
"$v" completions zsh --completer vmctl >"$root/usr/share/zsh/vendor-completions/_vmctl"
"$v" completions fish --completer vmctl >"$root/usr/share/fish/vendor_completions.d/vmctl.fish"
"$v" man "$root/usr/share/man/man1" >/dev/null
gzip -9n "$root"/usr/share/man/man1/*.1
install -D -m 0644 -t "$root/usr/share/vmctl/systemd" systemd/*.in
install -D -m 0644 -t "$root/usr/share/vmctl/grafana" contrib/grafana/vmctl-dashboard.json
doc=$root/usr/share/doc/vmctl
install -D -m 0644 -t "$doc" README.md SECURITY.md ARCHITECTURE.md BENCHMARKS.md
gzip -9n -c CHANGELOG.md >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
install -D -m 0644 -t "$doc/examples" vm-configs/*.toml
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vmctl

Files: *
Copyright: the vmctl developers
License: MIT or Apache-2.0
EOF
chmod 0644 "$doc/copyright"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
install -d "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<EOF
Package: vmctl
Version: $version
Architecture: $arch
Maintainer: vmctl developers <vmctl@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1, qemu-system-x86, qemu-utils, passt, openssh-client
Recommends: qemu-system-arm, systemd
Suggests: prometheus
Section: admin
Priority: optional
Homepage: https://example.invalid/vmctl
Description: QEMU/KVM virtual machines as small VPSs, managed from the command line
 vmctl creates VMs on qcow2 overlays of base images, boots them under KVM where
 it runs guests (TCG elsewhere), reaches them over SSH with a key, forwards
 ports, snapshots and saves them, runs them as systemd services (and from
 dropped definitions at boot, through its generator), links them on private
 networks, and exports them to libvirt, KubeVirt and Nomad. QEMU never runs as
 root.
EOF
mkdir -p "$out"
deb=$out/vmctl_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
