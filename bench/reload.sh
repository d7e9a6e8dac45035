#!/usr/bin/env bash
# Reload benchmark: how long a registry is without a certificate it can serve, and how soon
# regcert proves the new one is served, against a local Pebble ACME server and real containers.
#
#   bench/reload.sh          # installs missing Debian packages, builds regcert, runs, writes bench/reload-results.md
#
# Scenarios (RUNS runs of `regcert renew --force` each, default 5; medians reported):
#   A. the distribution registry (TLS on :5000) in a container, reloaded by regcert with
#      docker = { container = …, action = "restart" } and verified over HTTPS. A poller does TCP
#      connect + TLS handshake + GET /v2/ in a tight loop and records when the registry answers.
#   A0. as A, run first, with the registry as the only container of this script on the Docker
#      network (shows the extra unreachability from the bridge losing carrier / ARP; see below).
#   B. nginx terminating TLS in front of a plain-HTTP registry container, reloaded by regcert with
#      command = ["/usr/sbin/nginx", "-c", CONF, "-s", "reload"]; a poller counts failed requests.
#
# The timestamps "files written" (log line `installed`), `reloaded` and "verified" (log line
# `verified: the registry serves the new certificate`) come from regcert's JSON logs on stderr
# (--log-format json). Poller and regcert use the same clock (the system wall clock).
#
# Environment knobs: RUNS (default 5), KEEP=1 keeps the scratch directory with every log.
# Only loopback and the 172.31.0.0/16 Docker test network are used. Run it as root (Docker, nginx).
set -euo pipefail
export LC_ALL=C

# shellcheck source=SCRIPTDIR/../scripts/lib/pebble.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/pebble.sh"
# shellcheck disable=SC2034
LOG_TAG=reload-bench # the tag of log() lines
RUNS=${RUNS:-5}
NGINX=/usr/sbin/nginx
NAME=bench-registry.regcert.test
IMAGE=regcert-test/registry:2

# ---------------------------------------------------------------------------------------------
# 1. Dependencies, Docker test bed, regcert build
# ---------------------------------------------------------------------------------------------
bash "$REPO/scripts/install-deps.sh"
bash "$REPO/scripts/docker-testbed.sh"
scratch_dir W /tmp/regcert-reload-bench.XXXXXX
# A private copy of the binary: a concurrent rebuild must not swap it between runs.
build_regcert 3 "$W/regcert"
((GIT_DIRTY == 0)) || GIT_REV+=" (+ uncommitted changes in src/ or Cargo.*)"

# ---------------------------------------------------------------------------------------------
# 2. Ports, container addresses (the scratch directory and everything started here are cleaned
#    up at exit by scripts/lib/common.sh; the directory is kept on failure or with KEEP=1)
# ---------------------------------------------------------------------------------------------
free_ports P_ACME P_MGMT P_HTTP P_TLS P_DNS P_DNSMGMT P_NGINX

# Two free addresses in 172.31.250.0/24 (the project's tests use 172.31.10-249.x).
read -r IP_TLS IP_PLAIN < <(docker network inspect regcert-test --format '{{range .Containers}}{{.IPv4Address}} {{end}}' \
    | "$PY" -c '
import sys
used = {a.split("/")[0] for a in sys.stdin.read().split()}
free = [f"172.31.250.{n}" for n in range(2, 250) if f"172.31.250.{n}" not in used]
print(free[0], free[1])')
C_TLS="regcert-reload-bench-$$-tls"
C_PLAIN="regcert-reload-bench-$$-plain"

# ---------------------------------------------------------------------------------------------
# 3. Pebble and pebble-challtestsrv (scripts/lib/pebble.sh)
# ---------------------------------------------------------------------------------------------
# No injected badNonce here: steadier wall times.
# shellcheck disable=SC2153 # P_* set by free_ports
start_pebble "$W" "$P_ACME" "$P_MGMT" "$P_HTTP" "$P_TLS" "$P_DNS" "$P_DNSMGMT" 0 || die "pebble did not start; see $W/pebble.log"
curl -sf --cacert "$PEBBLE_ROOT" "https://127.0.0.1:$P_MGMT/roots/0" >"$W/pebble-issuing-root.pem"
grep -q 'BEGIN CERTIFICATE' "$W/pebble-issuing-root.pem" || die "no Pebble issuing root"

# config FILE CERT INSTALL_DIR: one certificate for $NAME from Pebble, installed in INSTALL_DIR
config() {
    {
        echo "state_dir = \"$W/state\""
        acme_toml "$PEBBLE_URL" "$PEBBLE_ROOT" ops@example.com "127.0.0.1:$P_HTTP"
        cert_toml "$2" "$NAME" "$3"
    } >"$1"
}

# reload_verify CONFIG RELOAD PORT CONNECT_TO: appends the reload table (RELOAD: its one line) and
# a check of https://$NAME:PORT/v2/, connecting to CONNECT_TO, against Pebble's issuing root.
reload_verify() {
    cat >>"$1" <<TOML
[certificate.reload]
$2
[certificate.verify]
url = "https://$NAME:$3/v2/"
connect_to = "$4"
ca_bundle = "$W/pebble-issuing-root.pem"
timeout = "30s"
TOML
}

# ---------------------------------------------------------------------------------------------
# 4. Helpers: poller, analysis
# ---------------------------------------------------------------------------------------------
# bench/tls_poller.py probes the registry during a run; bench/reload_run_summary.py reads the
# run's logs into result.json.

# one_run MODE CONFIG CERT INSTALL_DIR POLL_HOST POLL_PORT RUN_DIR
one_run() {
    local mode=$1 config=$2 cert=$3 install=$4 host=$5 port=$6 d=$7 pp t0 rc
    mkdir -p "$d"
    "$PY" "$BENCH/tls_poller.py" "$d/poller.log" "$d/stop" "$host" "$port" "$NAME" "$W/pebble-issuing-root.pem" &
    pp=$!
    PIDS+=("$pp")
    sleep 0.5
    t0=$EPOCHREALTIME
    set +e
    "$REGCERT" --config "$config" --log-format json renew --force --cert "$cert" >"$d/regcert.out" 2>"$d/regcert.log"
    rc=$?
    set -e
    elapsed_s "$t0" >"$d/wall"
    echo "$rc" >"$d/rc"
    sleep 1
    touch "$d/stop"
    wait "$pp" || true
    PIDS=("${PIDS[@]:0:${#PIDS[@]}-1}")
    cp "$install/domain.crt" "$d/domain.crt"
    if [[ $rc != 0 ]]; then
        log "run $d: regcert exited $rc"
        tail -n 5 "$d/regcert.log" >&2
    fi
    "$PY" "$BENCH/reload_run_summary.py" "$mode" "$d" >"$d/result.json"
    log "$(basename "$d"): $(cat "$d/result.json")"
}

wait_probe() { # wait_probe HOST PORT  (TLS + /v2/ answers, up to 20 s)
    wait_url 20 --cacert "$W/pebble-issuing-root.pem" --resolve "$NAME:$2:$1" "https://$NAME:$2/v2/"
}

# ---------------------------------------------------------------------------------------------
# 5. Scenario A: registry container restarted by regcert
# ---------------------------------------------------------------------------------------------
# The plain-HTTP registry of scenario B is started first and stays up: with another container on
# the network, the bridge keeps its carrier while the TLS registry restarts. A registry that is
# the only container on its bridge is measured separately first ("A0"): there the bridge loses
# carrier during the restart, and a client that keeps connecting meanwhile leaves the host's
# neighbour (ARP) entry failed, so the container is unreachable for a while after it is back.
log "scenario A: registry container $C_TLS at $IP_TLS, action = restart"
mkdir -p "$W/certs-tls"
CFG_A="$W/restart.toml"
config "$CFG_A" registry "$W/certs-tls"
"$REGCERT" --config "$CFG_A" -q renew >"$W/initial-a.out" || die "initial issuance failed: $(cat "$W/initial-a.out")"
at_exit "docker rm -f $C_TLS >/dev/null 2>&1"
docker run -d --name "$C_TLS" --network regcert-test --ip "$IP_TLS" -v "$W/certs-tls:/certs" \
    -e REGISTRY_HTTP_TLS_CERTIFICATE=/certs/domain.crt -e REGISTRY_HTTP_TLS_KEY=/certs/domain.key "$IMAGE" >/dev/null
wait_probe "$IP_TLS" 5000 || die "registry container $C_TLS does not answer over TLS"
reload_verify "$CFG_A" "docker = { container = \"$C_TLS\", action = \"restart\" }" 5000 "$IP_TLS:5000"
"$REGCERT" --config "$CFG_A" verify --cert registry >"$W/verify-a.out" || die "regcert verify fails before the runs: $(cat "$W/verify-a.out")"

on_network() { docker network inspect regcert-test --format '{{len .Containers}}' 2>/dev/null || echo '?'; }
for i in $(seq "$RUNS"); do
    n=$(on_network)
    one_run restart "$CFG_A" registry "$W/certs-tls" "$IP_TLS" 5000 "$W/alone-$i"
    # Other projects' test containers may share the network: note whether the run was really alone.
    [[ $n == 1 && $(on_network) == 1 ]] && echo 1 >"$W/alone-$i/alone" || echo 0 >"$W/alone-$i/alone"
done

at_exit "docker rm -f $C_PLAIN >/dev/null 2>&1"
docker run -d --name "$C_PLAIN" --network regcert-test --ip "$IP_PLAIN" "$IMAGE" >/dev/null
wait_url 20 "http://$IP_PLAIN:5000/v2/" || true
curl -sf -o /dev/null --max-time 2 "http://$IP_PLAIN:5000/v2/" || die "plain registry $C_PLAIN does not answer"
for i in $(seq "$RUNS"); do
    one_run restart "$CFG_A" registry "$W/certs-tls" "$IP_TLS" 5000 "$W/restart-$i"
done
docker logs "$C_TLS" >"$W/registry-tls.log" 2>&1 || true

# ---------------------------------------------------------------------------------------------
# 6. Scenario B: nginx in front of the plain-HTTP registry, `nginx -s reload` by regcert
# ---------------------------------------------------------------------------------------------
log "scenario B: nginx on 127.0.0.1:$P_NGINX in front of $C_PLAIN at $IP_PLAIN, command = nginx -s reload"
mkdir -p "$W/certs-nginx" "$W/nginx"
CFG_B="$W/nginx.toml"
config "$CFG_B" nginx "$W/certs-nginx"
"$REGCERT" --config "$CFG_B" -q renew >"$W/initial-b.out" || die "initial issuance failed: $(cat "$W/initial-b.out")"
N="$W/nginx"
cat >"$N/nginx.conf" <<CONF
pid $N/nginx.pid;
error_log $N/error.log;
worker_processes 2;
events {}
http {
  access_log off;
  client_body_temp_path $N/body;
  proxy_temp_path $N/proxy;
  fastcgi_temp_path $N/fcgi;
  uwsgi_temp_path $N/uwsgi;
  scgi_temp_path $N/scgi;
  server {
    listen 127.0.0.1:$P_NGINX ssl;
    server_name $NAME;
    ssl_certificate $W/certs-nginx/domain.crt;
    ssl_certificate_key $W/certs-nginx/domain.key;
    client_max_body_size 0;
    location / {
      proxy_pass http://$IP_PLAIN:5000;
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
NGINX_CONF="$N/nginx.conf"
# shellcheck disable=SC2016 # expanded at exit
at_exit '[[ ! -f $N/nginx.pid ]] || "$NGINX" -c "$NGINX_CONF" -s stop 2>/dev/null'
"$NGINX" -c "$NGINX_CONF" || die "nginx did not start: $(cat "$N/error.log" 2>/dev/null)"
wait_probe 127.0.0.1 "$P_NGINX" || die "nginx does not answer on 127.0.0.1:$P_NGINX"
reload_verify "$CFG_B" "command = [\"$NGINX\", \"-c\", \"$NGINX_CONF\", \"-s\", \"reload\"]" "$P_NGINX" "127.0.0.1:$P_NGINX"
"$REGCERT" --config "$CFG_B" verify --cert nginx >"$W/verify-b.out" || die "regcert verify fails before the runs: $(cat "$W/verify-b.out")"
for i in $(seq "$RUNS"); do
    one_run nginx "$CFG_B" nginx "$W/certs-nginx" 127.0.0.1 "$P_NGINX" "$W/nginx-$i"
done

# ---------------------------------------------------------------------------------------------
# 7. Report
# ---------------------------------------------------------------------------------------------
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MEM=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
DOCKER_V=$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)
NGINX_V=$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')
PEBBLE_V=$(dpkg-query -W -f='${Version}' pebble 2>/dev/null || echo unknown)
REGISTRY_V=$(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null || echo unknown)

"$PY" "$BENCH/reload_table.py" "$W" "$RUNS" >"$W/table.md"

{
    echo "# Reload benchmark results"
    echo
    echo "Written by \`bench/reload.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    echo "- machine: $(uname -srm), $(nproc) CPUs ($CPU), $MEM RAM"
    echo "- regcert: $REGCERT_VERSION, commit $GIT_REV"
    echo "- Docker engine $DOCKER_V (\`--iptables=false\`, containers reached directly on 172.31.250.x); registry image \`$IMAGE\`"
    echo "  (Debian docker-registry $REGISTRY_V); nginx $NGINX_V (2 workers); Pebble $PEBBLE_V"
    echo "- Pebble with \`PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0 PEBBLE_WFE_NONCEREJECT=0\`; one ECDSA P-256 certificate per renewal"
    echo
    cat "$W/table.md"
    echo
    echo "## How it is measured"
    echo
    echo "- Timestamps from regcert's JSON log (\`--log-format json\`): \`installed\` (fullchain and key written),"
    echo "  \`reloaded\` (the Docker restart call / the nginx command returned), \`verified: the registry serves the new"
    echo "  certificate\`. Wall time: the whole \`regcert renew --force\` process."
    echo "- Poller (python3): fresh TCP connection (connect timeout 50 ms, TCP_NODELAY), TLS handshake checked against"
    echo "  Pebble's issuing root with SNI $NAME, \`GET /v2/\` (200 or 401 counts as an answer), every ~2 ms after the"
    echo "  previous probe ends. It runs from 0.5 s before regcert starts to 1 s after it exits."
    echo "- Restart gap: the longest interval between the ends of two consecutive successful probes. \"Back\" is the end"
    echo "  of the first successful probe after that gap; \"verification confirmed after back\" = \`verified\` − back"
    echo "  (negative: regcert's own check got through before the poller's)."
    echo "- nginx: every failed probe (connect, TLS or HTTP error, or a status other than 200/401) counts as a failed request."
    echo "- A runs with a second container (the plain registry of B) on the Docker network. A0 runs first, with the TLS"
    echo "  registry as the only container of this script on the network (\"really alone\" counts runs in which no other"
    echo "  container was on it). Alone, the bridge loses carrier while the container is down, and a client that keeps"
    echo "  connecting leaves the host's ARP entry for the container failed; the container then stays unreachable until"
    echo "  the next ARP retry (up to \`retrans_time\`, 1 s), although the registry itself is already listening."
    echo "- nginx reload: the master starts the new workers, then waits 100 ms before it tells the old ones to quit;"
    echo "  meanwhile both accept new connections, so one check that gets the new certificate from a new worker does"
    echo "  not mean the old certificate is gone (see \"old cert after verified\")."
} >"$BENCH/reload-results.md"

echo
cat "$W/table.md"
echo
log "written $BENCH/reload-results.md"
