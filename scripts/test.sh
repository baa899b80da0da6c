#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests need, checks
# formatting and lints, then runs the unit tests and the integration tests (real QEMU, TCG).
#
#   scripts/test.sh                  # everything
#   scripts/test.sh lifecycle        # only tests whose name contains "lifecycle"
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets -- "$@"
