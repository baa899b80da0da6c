#!/usr/bin/env bash
# From a fresh Debian 12 machine to the seed's VPS: installs QEMU and the tools vmctl needs,
# builds vmctl (installed as /usr/local/bin/vmctl, with vmctl-generator linked into systemd's
# generator directory), builds the tiny image (vmctl's KVM test guest) and the debian-12 image,
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
echo "== building vmctl"
cargo build --release --locked
install -m 0755 target/release/vmctl /usr/local/bin/vmctl.new
mv /usr/local/bin/vmctl.new /usr/local/bin/vmctl
echo "== vmctl installed as /usr/local/bin/vmctl"
echo "== vmctl-generator: a VM defined in /etc/vmctl/vms/NAME.toml gets a unit, and starts at boot with autostart = true"
vmctl systemd install-generator

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
