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
               ca-certificates:/usr/sbin/update-ca-certificates \
               containerd:/usr/bin/ctr skopeo:/usr/bin/skopeo \
               man-db:/usr/bin/man binutils:/usr/bin/objdump adduser:/usr/sbin/adduser \
               etcd-server:/usr/bin/etcd etcd-client:/usr/bin/etcdctl protobuf-compiler:/usr/bin/protoc \
               nftables:/usr/sbin/nft; do
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

# Pebble 2.10 (profiles, ARI with /set-renewal-info/, IP identifiers, longer and alternate chains)
# for the tests, from Debian sid through this machine's own Debian mirror, into a private apt
# directory: sid is never added to the system's sources and the system's pebble stays as it is.
# The tests look for it there (or in $REGCERT_PEBBLE_2_10) and fail when it is missing.
pebble210=/var/cache/regcert-test/pebble210
# (`pebble -version` says "dev" in Debian's build: the package's version is what counts.)
pebble210_ok() {
  [ -x "$pebble210/x/usr/bin/pebble" ] && [ -x "$pebble210/x/usr/bin/pebble-challtestsrv" ] \
    && dpkg --compare-versions "$(dpkg-deb -f "$pebble210"/pebble_*.deb Version 2>/dev/null || echo 0)" ge 2.10
}
if [ -z "${REGCERT_PEBBLE_2_10:-}" ] && ! pebble210_ok; then
  sources=/etc/apt/sources.list.d/debian.sources
  uri=$(awk '/^URIs:/{print $2; exit}' "$sources" 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^(https?|file):/){print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
  if [ -z "$uri" ]; then
    echo "cannot fetch Pebble 2.10: no Debian mirror found in $sources or /etc/apt/sources.list; put pebble and pebble-challtestsrv 2.10 in a directory and set REGCERT_PEBBLE_2_10 to it" >&2
    exit 1
  fi
  echo "fetching Pebble 2.10 from Debian sid at $uri into $pebble210"
  rm -rf "$pebble210/x" "$pebble210"/pebble_*.deb
  mkdir -p "$pebble210/lists/partial" "$pebble210/cache/archives/partial" "$pebble210/x"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri sid main" >"$pebble210/sources.list"
  apt_private=(-o "Dir::Etc::SourceList=$pebble210/sources.list" -o Dir::Etc::SourceParts=/dev/null
               -o "Dir::State::Lists=$pebble210/lists" -o "Dir::Cache=$pebble210/cache"
               -o Acquire::Retries=3 -o Acquire::http::Timeout=30 -o APT::Sandbox::User=root)
  if ! timeout 300 apt-get "${apt_private[@]}" update -qq \
     || ! (cd "$pebble210" && timeout 300 apt-get "${apt_private[@]}" download pebble/sid) \
     || ! dpkg-deb -x "$pebble210"/pebble_*.deb "$pebble210/x"; then
    echo "cannot fetch Pebble 2.10 (Debian sid's pebble) from $uri: check that the mirror carries sid, or set REGCERT_PEBBLE_2_10 to a directory with pebble and pebble-challtestsrv 2.10" >&2
    exit 1
  fi
  pebble210_ok || { echo "the pebble fetched into $pebble210 is not 2.10 or newer" >&2; exit 1; }
  echo "Pebble $(dpkg-deb -f "$pebble210"/pebble_*.deb Version) in $pebble210/x/usr/bin"
fi

# promtool (Debian's `prometheus` package) checks and unit-tests contrib/prometheus/regcert-alerts.yml.
# The package also brings a Prometheus service: it is neither started (policy-rc.d, if the machine
# has none) nor left enabled; only promtool is wanted. No Recommends (node-exporter).
if ! [ -x /usr/bin/promtool ]; then
  echo "installing: prometheus (for promtool; its service is not started or enabled)"
  export DEBIAN_FRONTEND=noninteractive
  own_policy=
  if ! [ -e /usr/sbin/policy-rc.d ]; then
    own_policy=1
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true
  update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
