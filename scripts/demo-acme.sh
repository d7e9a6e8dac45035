#!/usr/bin/env bash
# End-to-end ACME demo: starts a local Pebble (Let's Encrypt's test CA), writes a
# regcert config for the name registry.example.test, runs `regcert renew` (issue + install),
# a second `renew` (nothing due), and `regcert status`. Everything stays on 127.0.0.1 and in a
# temporary directory, which is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/regcert

work=$(mktemp -d /tmp/regcert-demo.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

source scripts/lib/pebble.sh
acme=$(free_port) mgmt=$(free_port) http=$(free_port)
start_pebble "$work" "$acme" "$mgmt" "$http" "$(free_port)" "$(free_port)" "$(free_port)" 5

mkdir -p "$work/registry-certs"
cat > "$work/config.toml" <<TOML
state_dir = "$work/state"

[acme]
directory = "https://127.0.0.1:$acme/dir"
contact = ["mailto:ops@example.com"]
accept_terms = true
ca_bundle = "$work/pebble-root.pem"

[http01]
listen = "127.0.0.1:$http"

[[certificate]]
name = "registry"
domains = ["registry.example.test"]
key = "ecdsa-p256"
[certificate.install]
dir = "$work/registry-certs"
fullchain = "domain.crt"
key = "domain.key"
TOML

set -x
"$bin" --config "$work/config.toml" check-config
"$bin" --config "$work/config.toml" renew
"$bin" --config "$work/config.toml" renew
"$bin" --config "$work/config.toml" status
set +x
curl -s --cacert "$work/pebble-root.pem" "https://127.0.0.1:$mgmt/intermediates/0" >"$work/pebble-intermediate.pem"
curl -s --cacert "$work/pebble-root.pem" "https://127.0.0.1:$mgmt/roots/0" >"$work/pebble-issuing-root.pem"
openssl verify -CAfile "$work/pebble-issuing-root.pem" -untrusted "$work/registry-certs/domain.crt" \
  "$work/registry-certs/domain.crt"
ls -l "$work/registry-certs"
echo "demo files are in $work"
