#!/usr/bin/env bash
# Installs what regcert's tests and demo need on a fresh Debian machine (run as root).
# Idempotent: packages already present are not fetched again.
set -euo pipefail

need=()
for pkg_bin in pebble:/usr/bin/pebble openssl:/usr/bin/openssl curl:/usr/bin/curl \
               python3:/usr/bin/python3 util-linux:/usr/bin/setpriv iproute2:/usr/sbin/tc \
               docker.io:/usr/sbin/dockerd docker-registry:/usr/bin/docker-registry \
               nginx:/usr/sbin/nginx apache2-utils:/usr/bin/htpasswd \
               systemd:/usr/bin/systemd-analyze bind9:/usr/sbin/named bind9-dnsutils:/usr/bin/nsupdate \
               ca-certificates:/usr/sbin/update-ca-certificates; do
  pkg=${pkg_bin%%:*} bin=${pkg_bin#*:}
  [ -x "$bin" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null || { echo "cargo (Rust >= 1.89) is required: https://rustup.rs" >&2; exit 1; }
