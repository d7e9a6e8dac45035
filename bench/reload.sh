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

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
source "$REPO/scripts/lib/pebble.sh"
RUNS=${RUNS:-5}
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)
NGINX=/usr/sbin/nginx
NAME=bench-registry.regcert.test
IMAGE=regcert-test/registry:2

log() { printf '[reload-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# 1. Dependencies, Docker test bed, regcert build
# ---------------------------------------------------------------------------------------------
bash "$REPO/scripts/install-deps.sh"
bash "$REPO/scripts/docker-testbed.sh"
log "building regcert (cargo build --release)"
built=0
for attempt in 1 2 3; do
    if (cd "$REPO" && cargo build --release); then built=1; break; fi
    log "build failed (attempt $attempt); retrying in 60 s"
    sleep 60
done
((built)) || die "cargo build --release failed"

W=$(mktemp -d /tmp/regcert-reload-bench.XXXXXX)
# A private copy of the binary: a concurrent rebuild must not swap it between runs.
cp "$REPO/target/release/regcert" "$W/regcert"
REGCERT="$W/regcert"
REGCERT_VERSION=$("$REGCERT" --version)
GIT_REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(cd "$REPO" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then GIT_REV+=" (+ uncommitted changes in src/)"; fi

# ---------------------------------------------------------------------------------------------
# 2. Scratch directory, cleanup, ports, container addresses
# ---------------------------------------------------------------------------------------------
PIDS=()
CONTAINERS=()
NGINX_CONF=""
ok_exit=0
cleanup() {
    local pid c
    if [[ -n $NGINX_CONF && -f ${NGINX_CONF%/*}/nginx.pid ]]; then
        "$NGINX" -c "$NGINX_CONF" -s stop 2>/dev/null || true
    fi
    for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${KEEP:-0} == 1 || $ok_exit == 0 ]]; then log "scratch directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log "scratch directory $W"

read -r P_ACME P_MGMT P_HTTP P_TLS P_DNS P_DNSMGMT P_NGINX < <("$PY" - <<'EOF'
import socket
socks = []
for _ in range(7):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

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
start_pebble "$W" "$P_ACME" "$P_MGMT" "$P_HTTP" "$P_TLS" "$P_DNS" "$P_DNSMGMT" 0 || die "pebble did not start; see $W/pebble.log"
curl -sf --cacert "$W/pebble-root.pem" "https://127.0.0.1:$P_MGMT/roots/0" >"$W/pebble-issuing-root.pem"
grep -q 'BEGIN CERTIFICATE' "$W/pebble-issuing-root.pem" || die "no Pebble issuing root"

base_config() { # base_config FILE
    cat >"$1" <<TOML
state_dir = "$W/state"

[acme]
directory = "https://127.0.0.1:$P_ACME/dir"
contact = ["mailto:ops@example.com"]
accept_terms = true
ca_bundle = "$W/pebble-root.pem"

[http01]
listen = "127.0.0.1:$P_HTTP"
TOML
}

cert_table() { # cert_table FILE NAME INSTALL_DIR
    cat >>"$1" <<TOML

[[certificate]]
name = "$2"
domains = ["$NAME"]
key = "ecdsa-p256"
[certificate.install]
dir = "$3"
fullchain = "domain.crt"
key = "domain.key"
TOML
}

# ---------------------------------------------------------------------------------------------
# 4. Helpers: poller, analysis
# ---------------------------------------------------------------------------------------------
# poller.py OUT STOPFILE HOST PORT SNI CAFILE
# Tight loop: TCP connect (timeout 50 ms, TCP_NODELAY) + TLS handshake verified against CAFILE with SNI
# (timeout 2 s) + GET /v2/ on a fresh connection. One line per probe:
#   t_start t_end ok leaf_sha256_prefix|error
# ok = 1 when the handshake succeeded and /v2/ answered 200 or 401. Stops when STOPFILE exists
# (or after 180 s).
cat >"$W/poller.py" <<'EOF'
import hashlib, socket, ssl, sys, time, os
out, stopfile, host, port, sni, cafile = sys.argv[1:7]
port = int(port)
ctx = ssl.create_default_context(cafile=cafile)
req = f"GET /v2/ HTTP/1.1\r\nHost: {sni}:{port}\r\nUser-Agent: reload-bench\r\nConnection: close\r\n\r\n".encode()
deadline = time.time() + 180
with open(out, "w", buffering=1) as f:
    while time.time() < deadline and not os.path.exists(stopfile):
        t0 = time.time()
        fp = ""
        ok = 0
        try:
            s = socket.create_connection((host, port), timeout=0.05)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(2.0)
            with ctx.wrap_socket(s, server_hostname=sni) as tls:
                fp = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()[:16]
                tls.sendall(req)
                data = b""
                while b"\r\n" not in data:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                status = data.split(b"\r\n", 1)[0].split()
                code = int(status[1]) if len(status) > 1 else 0
                if code in (200, 401):
                    ok = 1
                else:
                    fp = f"http-{code}"
        except Exception as e:  # noqa: BLE001 - every failure is a data point
            fp = type(e).__name__
        t1 = time.time()
        f.write(f"{t0:.6f} {t1:.6f} {ok} {fp}\n")
        time.sleep(0.002)
EOF

# analyze.py MODE RUN_DIR  -> prints one JSON object with the run's numbers
cat >"$W/analyze.py" <<'EOF'
import datetime, hashlib, json, re, ssl, sys
mode, d = sys.argv[1], sys.argv[2]

def ts(s):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", s)
    base = datetime.datetime.fromisoformat(m.group(1) + (m.group(3) if m.group(3) != "Z" else "+00:00"))
    return base.timestamp() + (float(m.group(2)) if m.group(2) else 0.0)

events = {}
for line in open(f"{d}/regcert.log"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    obj = json.loads(line)
    msg = obj.get("fields", {}).get("message", "")
    key = {"installed": "installed", "reloaded": "reloaded",
           "verified: the registry serves the new certificate": "verified"}.get(msg)
    if key and key not in events:
        events[key] = ts(obj["timestamp"])

pem = open(f"{d}/domain.crt").read()
first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
new_fp = hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()[:16]

probes = []
for line in open(f"{d}/poller.log"):
    parts = line.split()
    if len(parts) == 4:
        probes.append((float(parts[0]), float(parts[1]), parts[2] == "1", parts[3]))
wall = float(open(f"{d}/wall").read().split()[0])
rc = int(open(f"{d}/rc").read().strip())
r = {"rc": rc, "wall_s": wall, "probes": len(probes), "failed_probes": sum(1 for p in probes if not p[2])}
r["errors"] = sorted({p[3] for p in probes if not p[2]})
if "installed" in events and "verified" in events:
    r["written_to_verified_ms"] = (events["verified"] - events["installed"]) * 1000
if "installed" in events and "reloaded" in events:
    r["written_to_reloaded_ms"] = (events["reloaded"] - events["installed"]) * 1000
ok = [p for p in probes if p[2]]
new = [p for p in ok if p[3] == new_fp]
if new and "verified" in events:
    r["first_new_served_to_verified_ms"] = (events["verified"] - new[0][1]) * 1000
old = [p for p in ok if p[3] != new_fp]
if old and "verified" in events:
    # > 0: a connection opened after regcert logged "verified" still got the old certificate.
    r["old_served_after_verified_ms"] = (old[-1][0] - events["verified"]) * 1000
if mode == "restart" and len(ok) >= 2:
    # Longest interval between two consecutive successful probes (end of one to end of the next):
    # the registry did not answer in between. "Back" is the end of the first probe after it.
    gaps = [(b[1] - a[1], a, b) for a, b in zip(ok, ok[1:])]
    gap, before, after = max(gaps, key=lambda g: g[0])
    r["gap_ms"] = gap * 1000
    r["back_serves_new"] = after[3] == new_fp
    if "installed" in events:
        r["gap_start_after_written_ms"] = (before[1] - events["installed"]) * 1000
    if "verified" in events:
        r["verified_after_back_ms"] = (events["verified"] - after[1]) * 1000
print(json.dumps(r))
EOF

# one_run MODE CONFIG CERT INSTALL_DIR POLL_HOST POLL_PORT RUN_DIR
one_run() {
    local mode=$1 config=$2 cert=$3 install=$4 host=$5 port=$6 d=$7 pp t0 t1 rc
    mkdir -p "$d"
    "$PY" "$W/poller.py" "$d/poller.log" "$d/stop" "$host" "$port" "$NAME" "$W/pebble-issuing-root.pem" &
    pp=$!
    PIDS+=("$pp")
    sleep 0.5
    t0=$EPOCHREALTIME
    set +e
    "$REGCERT" --config "$config" --log-format json renew --force --cert "$cert" >"$d/regcert.out" 2>"$d/regcert.log"
    rc=$?
    set -e
    t1=$EPOCHREALTIME
    echo "$rc" >"$d/rc"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }' >"$d/wall"
    sleep 1
    touch "$d/stop"
    wait "$pp" || true
    PIDS=("${PIDS[@]:0:${#PIDS[@]}-1}")
    cp "$install/domain.crt" "$d/domain.crt"
    if [[ $rc != 0 ]]; then
        log "run $d: regcert exited $rc"
        tail -n 5 "$d/regcert.log" >&2
    fi
    "$PY" "$W/analyze.py" "$mode" "$d" >"$d/result.json"
    log "$(basename "$d"): $(cat "$d/result.json")"
}

wait_probe() { # wait_probe HOST PORT  (TLS + /v2/ answers, up to 20 s)
    local i
    for i in $(seq 100); do
        curl -s -o /dev/null --max-time 1 --cacert "$W/pebble-issuing-root.pem" --resolve "$NAME:$2:$1" \
            "https://$NAME:$2/v2/" && return 0
        sleep 0.2
    done
    return 1
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
base_config "$CFG_A"
cert_table "$CFG_A" registry "$W/certs-tls"
"$REGCERT" --config "$CFG_A" -q renew >"$W/initial-a.out" || die "initial issuance failed: $(cat "$W/initial-a.out")"
CONTAINERS+=("$C_TLS")
docker run -d --name "$C_TLS" --network regcert-test --ip "$IP_TLS" -v "$W/certs-tls:/certs" \
    -e REGISTRY_HTTP_TLS_CERTIFICATE=/certs/domain.crt -e REGISTRY_HTTP_TLS_KEY=/certs/domain.key "$IMAGE" >/dev/null
wait_probe "$IP_TLS" 5000 || die "registry container $C_TLS does not answer over TLS"
cat >>"$CFG_A" <<TOML
[certificate.reload]
docker = { container = "$C_TLS", action = "restart" }
[certificate.verify]
url = "https://$NAME:5000/v2/"
connect_to = "$IP_TLS:5000"
ca_bundle = "$W/pebble-issuing-root.pem"
timeout = "30s"
TOML
"$REGCERT" --config "$CFG_A" verify --cert registry >"$W/verify-a.out" || die "regcert verify fails before the runs: $(cat "$W/verify-a.out")"

on_network() { docker network inspect regcert-test --format '{{len .Containers}}' 2>/dev/null || echo '?'; }
for i in $(seq "$RUNS"); do
    n=$(on_network)
    one_run restart "$CFG_A" registry "$W/certs-tls" "$IP_TLS" 5000 "$W/alone-$i"
    # Other projects' test containers may share the network: note whether the run was really alone.
    [[ $n == 1 && $(on_network) == 1 ]] && echo 1 >"$W/alone-$i/alone" || echo 0 >"$W/alone-$i/alone"
done

CONTAINERS+=("$C_PLAIN")
docker run -d --name "$C_PLAIN" --network regcert-test --ip "$IP_PLAIN" "$IMAGE" >/dev/null
for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://$IP_PLAIN:5000/v2/" && break; sleep 0.2; done
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
base_config "$CFG_B"
cert_table "$CFG_B" nginx "$W/certs-nginx"
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
"$NGINX" -c "$NGINX_CONF" || die "nginx did not start: $(cat "$N/error.log" 2>/dev/null)"
wait_probe 127.0.0.1 "$P_NGINX" || die "nginx does not answer on 127.0.0.1:$P_NGINX"
cat >>"$CFG_B" <<TOML
[certificate.reload]
command = ["$NGINX", "-c", "$NGINX_CONF", "-s", "reload"]
[certificate.verify]
url = "https://$NAME:$P_NGINX/v2/"
connect_to = "127.0.0.1:$P_NGINX"
ca_bundle = "$W/pebble-issuing-root.pem"
timeout = "30s"
TOML
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

export W RUNS
"$PY" - >"$W/table.md" <<'EOF'
import json, os, statistics
W, runs = os.environ["W"], int(os.environ["RUNS"])
def load(mode):
    rs = []
    for i in range(1, runs + 1):
        r = json.load(open(f"{W}/{mode}-{i}/result.json"))
        if os.path.exists(f"{W}/{mode}-{i}/alone"):
            r["alone"] = open(f"{W}/{mode}-{i}/alone").read().strip() == "1"
        rs.append(r)
    return rs
A0, A, B = load("alone"), load("restart"), load("nginx")

def vals(rs, key, scale=1.0):
    return [r[key] * scale for r in rs if r.get("rc") == 0 and key in r]

def med(rs, key, scale=1.0):
    v = vals(rs, key, scale)
    if not v:
        return "—"
    s = f"{round(statistics.median(v))} ms"
    return s if len(v) == len(rs) else f"{s} ({len(v)}/{len(rs)} runs)"

def rng(rs, key, scale=1.0):
    v = vals(rs, key, scale)
    return f"{round(min(v))} – {round(max(v))} ms" if v else "—"

def ok(rs):
    return f"{sum(r['rc'] == 0 for r in rs)}/{len(rs)}"

va = vals(A, "verified_after_back_ms")
target = "—" if not va else ("met" if statistics.median(va) <= 500 else "MISSED")
back_new = sum(bool(r.get("back_serves_new")) for r in A)
failed_req, total_req = sum(r["failed_probes"] for r in B), sum(r["probes"] for r in B)
stale = [r["old_served_after_verified_ms"] for r in B if r.get("old_served_after_verified_ms", -1) > 0]
alone = sum(bool(r.get("alone")) for r in A0)

lines = []
w = lines.append
w(f"| measurement (median of {runs} runs of `regcert renew --force`) | median | min – max |")
w("|---|---|---|")
w(f"| **A. registry container, reload `docker` restart** (runs that exited 0: {ok(A)}) | | |")
w(f"| A: files written → verified (`installed` → `verified` log lines) | {med(A, 'written_to_verified_ms')} | {rng(A, 'written_to_verified_ms')} |")
w(f"| A: … of which files written → restart call returned (`reloaded`) | {med(A, 'written_to_reloaded_ms')} | {rng(A, 'written_to_reloaded_ms')} |")
w(f"| A: whole `renew --force` wall time (ACME + install + restart + verify) | {med(A, 'wall_s', 1000)} | {rng(A, 'wall_s', 1000)} |")
w(f"| A: registry restart gap (longest time without an answer, poller) | {med(A, 'gap_ms')} | {rng(A, 'gap_ms')} |")
w(f"| A: verification confirmed after the registry was back (target ≤ 500 ms: **{target}**) | {med(A, 'verified_after_back_ms')} | {rng(A, 'verified_after_back_ms')} |")
w(f"| A: first answer after the gap already served the new certificate | {back_new}/{len(A)} runs | |")
w(f"| **B. nginx in front of a plain-HTTP registry, reload `nginx -s reload`** (runs that exited 0: {ok(B)}) | | |")
w(f"| B: files written → verified | {med(B, 'written_to_verified_ms')} | {rng(B, 'written_to_verified_ms')} |")
w(f"| B: whole `renew --force` wall time | {med(B, 'wall_s', 1000)} | {rng(B, 'wall_s', 1000)} |")
w(f"| B: failed requests seen by the poller (all {runs} runs; target 0) | **{failed_req}** of {total_req} | |")
w(f"| B: runs in which a connection opened after `verified` still got the old certificate | {len(stale)}/{len(B)}"
  + (f" (up to {round(max(stale))} ms after)" if stale else "") + " | |")
w(f"| *A0. as A, but the registry alone on its Docker network* (exited 0: {ok(A0)}; really alone: {alone}/{len(A0)}) | | |")
w(f"| A0: files written → verified | {med(A0, 'written_to_verified_ms')} | {rng(A0, 'written_to_verified_ms')} |")
w(f"| A0: registry restart gap (poller) | {med(A0, 'gap_ms')} | {rng(A0, 'gap_ms')} |")
w(f"| A0: verification confirmed after the registry was back | {med(A0, 'verified_after_back_ms')} | {rng(A0, 'verified_after_back_ms')} |")
w("")
w("Per run (ms; \"old cert after verified\" > 0 means a connection opened that long after `verified` still got the old certificate):")
w("")
w("| run | rc | written → reloaded | written → verified | wall | gap | verified after back | old cert after verified | failed probes |")
w("|---|---|---|---|---|---|---|---|---|")
f = lambda r, k: f"{round(r[k])}" if k in r else "—"
for mode, rs in (("A", A), ("B", B), ("A0", A0)):
    for i, r in enumerate(rs, 1):
        w(f"| {mode}.{i} | {r['rc']} | {f(r, 'written_to_reloaded_ms')} | {f(r, 'written_to_verified_ms')} | {round(r['wall_s'] * 1000)} | "
          f"{f(r, 'gap_ms')} | {f(r, 'verified_after_back_ms')} | {f(r, 'old_served_after_verified_ms')} | {r['failed_probes']}"
          + (f" ({', '.join(r['errors'])})" if r['errors'] else "") + " |")
print("\n".join(lines))
EOF

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
ok_exit=1
