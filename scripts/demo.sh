#!/usr/bin/env bash
# The main job end to end with zero external services: regcert creates a private CA, issues a
# registry certificate with DNS and IP SANs, installs it, starts a real registry (Debian's
# distribution registry, as a local process) on it, renews it through reload + HTTPS
# verification, and shows status and `regcert verify`. Everything stays on 127.0.0.1 and in a
# temporary directory, printed at the end. (scripts/demo-acme.sh does the same over ACME with a
# local Pebble.)
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
demo_start
bin=$REGCERT work=$DEMO_DIR
declare port
free_ports port
mkdir -p "$work/registry-certs" "$work/registry-data"
# The registry runs detached (setsid, see restart-registry.sh): stop it through its pid file.
# shellcheck disable=SC2016 # expanded at exit
at_exit 'if [[ -f $work/registry.pid ]]; then kill "$(cat "$work/registry.pid")" 2>/dev/null; fi'

# The registry, as the operator runs it: it reads domain.crt/domain.key once at start.
cat > "$work/registry.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $work/registry-data } }
http:
  addr: 127.0.0.1:$port
  tls: { certificate: $work/registry-certs/domain.crt, key: $work/registry-certs/domain.key }
YML
cat > "$work/restart-registry.sh" <<SH
#!/bin/sh
# (Re)start the registry so that it loads the new certificate.
[ -f $work/registry.pid ] && kill \$(cat $work/registry.pid) 2>/dev/null && sleep 0.2
setsid docker-registry serve $work/registry.yml >>$work/registry.log 2>&1 < /dev/null &
echo \$! > $work/registry.pid
SH
chmod +x "$work/restart-registry.sh"

cat > "$work/config.toml" <<TOML
state_dir = "$work/state"

[ca.demo]
subject = "CN=regcert demo CA, O=regcert"
key = "ecdsa-p384"
validity = "10y"

[[certificate]]
name = "registry"
issuer = "ca:demo"
domains = ["registry.demo.test"]
ips = ["127.0.0.1"]
validity = "90d"
[certificate.install]
dir = "$work/registry-certs"
[certificate.reload]
command = ["$work/restart-registry.sh"]
[certificate.verify]
url = "https://127.0.0.1:$port/v2/"
timeout = "30s"
TOML

set -x
"$bin" --config "$work/config.toml" check-config
"$bin" --config "$work/config.toml" ca init demo
"$bin" --config "$work/config.toml" renew            # issue, install, start the registry, verify
"$bin" --config "$work/config.toml" renew            # nothing due
"$bin" --config "$work/config.toml" renew --force    # renew: install, restart, verify the new one is served
"$bin" --config "$work/config.toml" status
"$bin" --config "$work/config.toml" verify
"$bin" --config "$work/config.toml" ca export demo > "$work/demo-root.crt"
curl -sS --cacert "$work/demo-root.crt" "https://127.0.0.1:$port/v2/" -o /dev/null -w "curl: HTTP %{http_code} over TLS verified with the demo CA\n"
set +x
openssl x509 -noout -ext subjectAltName -in "$work/registry-certs/domain.crt"
ls -l "$work/registry-certs"
echo "demo files are in $work"
