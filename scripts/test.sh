#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs pebble, the Docker engine, the
# distribution registry, nginx & co; starts dockerd and builds the test registry image offline;
# checks formatting and lints; then runs every test (unit tests, and the integration tests in
# tests/it/ against a real Pebble ACME server, real registry containers, nginx, BIND and the real
# docker client).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/docker-testbed.sh
for tool in rustfmt clippy; do
  cargo "${tool/rustfmt/fmt}" --version >/dev/null 2>&1 || { echo "cargo $tool is missing: rustup component add $tool" >&2; exit 1; }
done
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets -- --test-threads=2
