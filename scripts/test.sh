#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs pebble, the Docker engine, the
# distribution registry, nginx & co; starts dockerd and builds the test registry image offline;
# then runs every test (unit tests, and integration tests against a real Pebble ACME server,
# real registry containers, nginx and the real docker client).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/docker-testbed.sh
cargo test --locked --all-targets -- --test-threads=2
