#!/usr/bin/env bash
# End-to-end ACME demo: starts a local Pebble (Let's Encrypt's test CA), writes a
# regcert config for the name registry.example.test, runs `regcert renew` (issue + install),
# a second `renew` (nothing due), and `regcert status`. Everything stays on 127.0.0.1 and in a
# temporary directory, which is printed at the end.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/pebble.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/pebble.sh"
demo_start
bin=$REGCERT work=$DEMO_DIR
declare acme mgmt http tls dns dnsmgmt
free_ports acme mgmt http tls dns dnsmgmt
start_pebble "$work" "$acme" "$mgmt" "$http" "$tls" "$dns" "$dnsmgmt" 5

mkdir -p "$work/registry-certs"
{
  echo "state_dir = \"$work/state\""
  acme_toml "$PEBBLE_URL" "$PEBBLE_ROOT" ops@example.com "127.0.0.1:$http"
  cert_toml registry registry.example.test "$work/registry-certs"
} >"$work/config.toml"

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
