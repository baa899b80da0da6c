#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests need, checks
# the crate's structure (ARCHITECTURE.md's rule), formatting and lints, then runs the unit tests
# and the integration tests (real QEMU, TCG).
#
#   scripts/test.sh                  # everything
#   scripts/test.sh lifecycle        # only tests whose name contains "lifecycle"
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --test
# The root file system the systemd tests boot (tests/integration/nspawn.rs): ~35 s the first time,
# instant while its recipe is unchanged.
echo "== scripts/nspawn-rootfs.sh"
scripts/nspawn-rootfs.sh >/dev/null
# Ansible (for the inventory test), jsonschema (the KubeVirt export's schema check) and an HCL
# parser (the Nomad export's) from PyPI, in a venv under target/ so the host stays clean.
venv=target/vmctl-test/venv
if ! "$venv/bin/python" -c 'import ansible, jsonschema, hcl2' 2>/dev/null; then
	echo "== installing ansible-core, jsonschema and python-hcl2 into $venv"
	[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
	"$venv/bin/pip" install -q ansible-core jsonschema python-hcl2
fi
echo "== scripts/check-structure.py (no import circle, imports down the layers, sizes)"
scripts/check-structure.py --self-test
scripts/check-structure.py
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
# Names this run's test homes, so that scripts/check-leaks.sh can tell its processes apart.
export VMCTL_TEST_RUN=${VMCTL_TEST_RUN:-$$}
cargo test --locked --all-targets -- "$@"
echo "== scripts/check-leaks.sh (no VM of a test outlives the run)"
scripts/check-leaks.sh "$VMCTL_TEST_RUN"
