#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs pebble, the Docker engine, the
# distribution registry, nginx & co; starts dockerd and builds the test registry image offline;
# checks formatting and lints; then runs every test (unit tests, and the integration tests in
# tests/it/ against a real Pebble ACME server, real registry containers, nginx, BIND and the real
# docker client); then the end-to-end tests once more against the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/docker-testbed.sh
for tool in rustfmt clippy; do
  cargo "${tool/rustfmt/fmt}" --version >/dev/null 2>&1 || { echo "cargo $tool is missing: rustup component add $tool" >&2; exit 1; }
done
# The release binary users get (fat LTO, stripped) is built from here on, at low priority:
# it takes the CPU the lints and the debug build leave idle (their single-threaded stretches)
# and then the time the debug suite spends waiting on Pebble, containers and timeouts. Debug
# and release builds lock separate target dirs, so they do not wait for each other.
release_log=$(mktemp)
started=$SECONDS
nice -n 15 cargo build --release --locked >"$release_log" 2>&1 &
release_build=$!
trap 'kill "$release_build" 2>/dev/null || true' EXIT
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets --no-run
echo "lints and the debug build took $((SECONDS - started)) s"
# The package tests (tests/it/package.rs) package the binary under test: they run once, below,
# against the release build.
packaged=(
  package::deb_installs_runs_shows_its_man_page_verifies_its_units_and_purges_cleanly
  package::container_image_renews_restarts_and_verifies_the_registry_next_to_it
)
cargo test --locked --all-targets -- --test-threads=2 "${packaged[@]/#/--skip=}"
if ! wait "$release_build"; then
  cat "$release_log" >&2
  echo "cargo build --release failed" >&2
  exit 1
fi
trap - EXIT
echo "release build finished $((SECONDS - started)) s after it started (with the lints)"
# The end-to-end tests once more, against the release binary (the harness runs $REGCERT_BIN):
# ACME issue → install → reload → verify, rollback, the private CA, the service, concurrency,
# and the package and the image made from it.
e2e=(
  renew::issues_installs_then_noop_then_force_keeps_backup
  registry::restart_verify_then_docker_login_push_pull
  registry::reload_that_does_not_reload_is_rolled_back
  local_ca::leaf_renewal_restarts_verifies_against_the_ca_and_syncs_certs_d
  daemon::daemon_renews_restarts_verifies_reports_metrics_and_notifies
  daemon::concurrency_bounds_the_renewals_at_once_and_a_failing_certificate_blocks_no_other
  # The .deb installed with dpkg and purged, the container image renewing a registry's certificate
  # (scripts/package.sh makes both from $REGCERT_BIN).
  "${packaged[@]}"
)
# A renamed test must not drop out of this list unnoticed.
listed=$(cargo test --locked --test it -- --exact --list "${e2e[@]}" 2>/dev/null | grep -c ': test$' || true)
if [ "$listed" -ne "${#e2e[@]}" ]; then
  echo "scripts/test.sh names ${#e2e[@]} end-to-end tests for the release binary, but only $listed exist: update the list" >&2
  exit 1
fi
tested=$SECONDS
REGCERT_BIN="$PWD/target/release/regcert" cargo test --locked --test it -- --exact --test-threads=2 "${e2e[@]}"
echo "end-to-end tests against the release binary: $((SECONDS - tested)) s"
