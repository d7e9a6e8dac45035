#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs pebble & co, then runs every test
# (unit tests and integration tests against a real Pebble ACME server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --locked --all-targets -- --test-threads=2
