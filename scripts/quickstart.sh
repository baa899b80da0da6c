#!/usr/bin/env bash
# From a fresh Debian 12 machine to the seed's VPS: installs QEMU and the tools vmctl needs,
# builds vmctl and installs it as a Debian package (scripts/package.sh: /usr/bin/vmctl,
# vmctl-generator in systemd's generator folders, completions, manual pages), builds the tiny image (vmctl's KVM test guest) and the debian-12 image,
# creates VM "web" from vm-configs/web.toml (1 vCPU, 2 GB, 10 GB; SSH on 127.0.0.1:5022 with a key
# only, gunicorn on 127.0.0.1:5080), starts it and shows it answering.
#
#   sudo scripts/quickstart.sh       # VM "web" (VMCTL_DEMO_NAME), ports 5022/5080
set -euo pipefail
cd "$(dirname "$0")/.."

name=${VMCTL_DEMO_NAME:-web}

if [[ $(id -u) -ne 0 ]]; then
	echo "quickstart: run as root (it installs packages and builds a Debian image)" >&2
	exit 1
fi
scripts/install-deps.sh
echo "== building vmctl and its Debian package"
cargo build --release --locked
deb=$(scripts/package.sh --binary target/release/vmctl)
# An older quickstart copied the binary to /usr/local/bin, ahead of the package's on PATH, and
# linked the generator into /etc: both give way to the package's.
if [[ -x /usr/local/bin/vmctl ]] && ! dpkg -S /usr/local/bin/vmctl >/dev/null 2>&1; then
	/usr/local/bin/vmctl systemd uninstall-generator >/dev/null 2>&1 || true
	rm -f /usr/local/bin/vmctl
fi
echo "== installing $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall "$deb"
echo "== vmctl installed as /usr/bin/vmctl, with completions (bash, zsh, fish), manual pages"
echo "   (man vmctl-start) and vmctl-generator: a VM defined in /etc/vmctl/vms/NAME.toml gets a"
echo "   unit, and starts at boot with autostart = true"

echo "== building images: tiny (seconds), debian-12 (a minute or two the first time)"
vmctl image build tiny
vmctl image build debian-12
vmctl image list

echo "== host check"
vmctl doctor

if ! vmctl status "$name" >/dev/null 2>&1; then
	echo "== creating VM $name"
	vmctl create "$name" --from vm-configs/web.toml
fi
if ! vmctl status "$name" --json | grep -q '"pid": [0-9]'; then
	echo "== starting VM $name (TCG boots it in about half a minute)"
	vmctl start "$name" --wait
fi
vmctl list
http=$(vmctl status "$name" --json | sed -n 's/^    "\([0-9]*\):8080",\{0,1\}$/\1/p' | head -1)
echo "== GET http://127.0.0.1:${http:-5080}/"
curl -fsS "http://127.0.0.1:${http:-5080}/"
echo "== vmctl ssh $name -- id"
vmctl ssh "$name" -- id
echo
echo "Next: vmctl ssh $name | vmctl status $name | vmctl logs $name | vmctl stop $name"
