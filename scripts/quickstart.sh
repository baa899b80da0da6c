#!/usr/bin/env bash
# From a fresh Debian 12 machine to a running VM answering through its forwarded port:
# installs QEMU and the tools vmctl needs, builds vmctl, builds the tiny image, creates the VM
# "demo" from vm-configs/tiny.toml and starts it.
#
#   scripts/quickstart.sh            # VM "demo", host port 8080 (VMCTL_DEMO_PORT to change)
set -euo pipefail
cd "$(dirname "$0")/.."

port=${VMCTL_DEMO_PORT:-8080}
name=${VMCTL_DEMO_NAME:-demo}

scripts/install-deps.sh
echo "== building vmctl"
cargo build --release --locked
bin=target/release/vmctl
if [[ $(id -u) -eq 0 ]]; then
	install -m 0755 "$bin" /usr/local/bin/vmctl.new && mv /usr/local/bin/vmctl.new /usr/local/bin/vmctl
	vmctl=/usr/local/bin/vmctl
else
	mkdir -p "$HOME/.local/bin"
	install -m 0755 "$bin" "$HOME/.local/bin/vmctl"
	vmctl=$HOME/.local/bin/vmctl
fi
echo "== vmctl installed as $vmctl"

echo "== building the tiny image (Debian kernel + busybox)"
"$vmctl" image build tiny

echo "== host check"
"$vmctl" doctor

if ! "$vmctl" status "$name" >/dev/null 2>&1; then
	echo "== creating VM $name"
	"$vmctl" create "$name" --from vm-configs/tiny.toml --port "$port:8080"
fi
if [[ $("$vmctl" status "$name" --json | sed -n 's/^  "state": "\(.*\)",$/\1/p') != running ]]; then
	echo "== starting VM $name"
	"$vmctl" start "$name" --wait
fi
"$vmctl" list
echo "== GET http://127.0.0.1:$port/"
curl -fsS "http://127.0.0.1:$port/"
echo
echo "vmctl status $name | vmctl logs $name | vmctl stop $name"
