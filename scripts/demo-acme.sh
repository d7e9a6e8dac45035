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
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
acme=$(port) mgmt=$(port) http=$(port) tls=$(port) dns=$(port) dnsmgmt=$(port)

# Pebble's own HTTPS listener needs a certificate; Debian ships none. Make a root and a leaf.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=demo pebble root" \
  -keyout "$work/root.key" -out "$work/root.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$work/pebble.key" -out "$work/pebble.csr" 2>/dev/null
openssl x509 -req -in "$work/pebble.csr" -CA "$work/root.pem" -CAkey "$work/root.key" -CAcreateserial -days 2 \
  -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') -out "$work/pebble.pem" 2>/dev/null
cat > "$work/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$acme", "managementListenAddress": "127.0.0.1:$mgmt",
  "certificate": "$work/pebble.pem", "privateKey": "$work/pebble.key", "httpPort": $http, "tlsPort": $tls,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
pebble-challtestsrv -dns01 "127.0.0.1:$dns" -management "127.0.0.1:$dnsmgmt" -http01 "" -https01 "" -tlsalpn01 "" \
  -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$work/challtestsrv.log" 2>&1 & pids+=($!)
PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0 pebble -config "$work/pebble.json" -dnsserver "127.0.0.1:$dns" \
  >"$work/pebble.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -s --cacert "$work/root.pem" "https://127.0.0.1:$acme/dir" >/dev/null && break; sleep 0.1; done

mkdir -p "$work/registry-certs"
cat > "$work/config.toml" <<TOML
state_dir = "$work/state"

[acme]
directory = "https://127.0.0.1:$acme/dir"
contact = ["mailto:ops@example.com"]
accept_terms = true
ca_bundle = "$work/root.pem"

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
curl -s --cacert "$work/root.pem" "https://127.0.0.1:$mgmt/intermediates/0" >"$work/pebble-intermediate.pem"
curl -s --cacert "$work/root.pem" "https://127.0.0.1:$mgmt/roots/0" >"$work/pebble-issuing-root.pem"
openssl verify -CAfile "$work/pebble-issuing-root.pem" -untrusted "$work/registry-certs/domain.crt" \
  "$work/registry-certs/domain.crt"
ls -l "$work/registry-certs"
echo "demo files are in $work"
