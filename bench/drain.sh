#!/usr/bin/env bash
# Drain benchmark: failed pushes and pulls while regcert rotates the certificate of a registry
# container (`docker restart`), without `[certificate.reload] drain`, with it, and with drain and
# `hold`; how long the drain waited and how long new connections were held.
#
#   bench/drain.sh     # installs missing Debian packages, builds regcert, runs, writes bench/drain-results.md
#
# Each run: a fresh image with one layer of LAYER_MB random (incompressible) MB is pushed by the
# real docker client, slowed to RATE by a token bucket (tc) on the container's link, so that it is
# certainly in flight; meanwhile a pull loop pulls a small image (PULL_GAP seconds between pulls,
# like nodes that pull now and then); 4 s into the push, `regcert renew --force` runs. A push is
# "cut" when it fails or the docker client had to retry a layer ("Retrying in …"). Whether a pull
# of the loop falls into the restart is chance (the registry refuses connections for a tenth of a
# second or so), so each run also has a client connect every 10 ms from the moment Docker signals
# the registry to stop (event `kill`) for 2.5 s, and counts the connects refused.
#
# Environment knobs: RUNS (3 per mode), LAYER_MB (24), RATE (12mbit), PULL_GAP (2), DRAIN (5m), HOLD (30s),
# REGCERT_BIN (use this binary instead of building), KEEP=1 keeps the scratch directory.
# Only loopback and the 172.31.0.0/16 Docker test network are used. Run it as root (Docker, tc).
set -euo pipefail
export LC_ALL=C

# shellcheck source=SCRIPTDIR/../scripts/lib/pebble.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/pebble.sh"
# shellcheck disable=SC2034
LOG_TAG=drain-bench
RUNS=${RUNS:-3}
LAYER_MB=${LAYER_MB:-24}
RATE=${RATE:-12mbit}
PULL_GAP=${PULL_GAP:-2}
DRAIN=${DRAIN:-5m}
HOLD=${HOLD:-30s}
NAME=bench-drain-$$.regcert.test
IMAGE=regcert-test/registry:2
TINY=regcert-test/tiny:1

bash "$REPO/scripts/install-deps.sh"
bash "$REPO/scripts/docker-testbed.sh"
scratch_dir W /tmp/regcert-drain-bench.XXXXXX
regcert_under_test "$W/regcert"

free_ports P_ACME P_MGMT P_HTTP P_TLS P_DNS P_DNSMGMT
# shellcheck disable=SC2153 # P_* set by free_ports
start_pebble "$W" "$P_ACME" "$P_MGMT" "$P_HTTP" "$P_TLS" "$P_DNS" "$P_DNSMGMT" 0 || die "pebble did not start; see $W/pebble.log"
curl -sf --cacert "$PEBBLE_ROOT" "https://127.0.0.1:$P_MGMT/roots/0" >"$W/issuing-root.pem"
grep -q 'BEGIN CERTIFICATE' "$W/issuing-root.pem" || die "no Pebble issuing root"

# A free address in 172.31.251.0/24 (the tests use 172.31.10-249.x, bench/reload.sh .250.x).
IP=$(docker network inspect regcert-test --format '{{range .Containers}}{{.IPv4Address}} {{end}}' | "$PY" -c '
import sys
used = {a.split("/")[0] for a in sys.stdin.read().split()}
print(next(f"172.31.251.{n}" for n in range(2, 250) if f"172.31.251.{n}" not in used))')
C="regcert-drain-bench-$$"

mkdir -p "$W/certs"
CFG="$W/regcert.toml"
{
    echo "state_dir = \"$W/state\""
    acme_toml "$PEBBLE_URL" "$PEBBLE_ROOT" ops@example.com "127.0.0.1:$P_HTTP"
    cert_toml registry "$NAME" "$W/certs"
} >"$CFG"
"$REGCERT" --config "$CFG" -q renew >"$W/initial.out" || die "initial issuance failed: $(cat "$W/initial.out")"
at_exit "docker rm -f $C >/dev/null 2>&1"
docker run -d --name "$C" --network regcert-test --ip "$IP" -v "$W/certs:/certs" \
    -e REGISTRY_HTTP_TLS_CERTIFICATE=/certs/domain.crt -e REGISTRY_HTTP_TLS_KEY=/certs/domain.key "$IMAGE" >/dev/null
cat >>"$CFG" <<TOML
[certificate.reload]
docker = { container = "$C", action = "restart" }
[certificate.verify]
url = "https://$NAME:5000/v2/"
connect_to = "$IP:5000"
ca_bundle = "$W/issuing-root.pem"
timeout = "30s"
TOML
cp "$CFG" "$W/nodrain.toml"
sed "s/^\[certificate.reload\]\$/[certificate.reload]\ndrain = \"$DRAIN\"/" "$CFG" >"$W/drain.toml"
sed "s/^\[certificate.reload\]\$/[certificate.reload]\ndrain = \"$DRAIN\"\nhold = \"$HOLD\"/" "$CFG" >"$W/hold.toml"

# The docker client: the name on the bridge address, Pebble's root in certs.d.
echo "$IP $NAME" >>/etc/hosts
at_exit "sed -i '/ $NAME\$/d' /etc/hosts"
mkdir -p "/etc/docker/certs.d/$NAME:5000"
at_exit "rm -rf /etc/docker/certs.d/$NAME:5000"
cp "$W/issuing-root.pem" "/etc/docker/certs.d/$NAME:5000/ca.crt"
REPO_TINY="$NAME:5000/tiny:1"
docker tag "$TINY" "$REPO_TINY"
at_exit "docker rmi -f $REPO_TINY >/dev/null 2>&1"
for _ in $(seq 20); do docker push "$REPO_TINY" >/dev/null 2>&1 && break; sleep 0.5; done # dockerd caches names ~5 s
docker push "$REPO_TINY" >/dev/null || die "cannot push to $NAME:5000"

# throttle: a token bucket on the host end of the container's link (a restart makes a new link).
throttle() {
    local pid index link
    pid=$(docker inspect -f '{{.State.Pid}}' "$C")
    index=$(nsenter -t "$pid" -n ip -o link show eth0 | sed -n 's/.*@if\([0-9]*\):.*/\1/p')
    link=$(ip -o link | awk -F': ' -v i="$index" '$1 == i { split($2, a, "@"); print a[1] }')
    tc qdisc replace dev "$link" root tbf rate "$RATE" burst 32kb latency 2s
}

# pull_loop DIR: pull the small image until DIR/stop exists; one line per pull in DIR/pulls.
pull_loop() {
    local d=$1
    while [[ ! -e $d/stop ]]; do
        docker rmi -f "$REPO_TINY" >/dev/null 2>&1 || true
        if docker pull -q "$REPO_TINY" >>"$d/pull.out" 2>&1; then echo ok >>"$d/pulls"; else echo failed >>"$d/pulls"; fi
        sleep "$PULL_GAP"
    done
}

# restart_connects DIR: from Docker's `kill` of the registry (the restart's stop) on, a client
# connects to it every 10 ms for 2.5 s; DIR/connects.json says how many connects were made, how
# many refused, and the slowest one that succeeded. Started only at the restart, so that its
# connections do not count in the drain. Process substitution: the shell does not wait for
# `docker events`.
restart_connects() {
    local d=$1
    { read -r _ || true; } < <(timeout 120 docker events --filter "container=$C" --filter event=kill --format '{{.Status}}')
    [[ -e $d/stop ]] && return
    "$PY" - "$IP" >"$d/connects.json" <<'PY'
import json, socket, sys, time
made = refused = 0
slowest = 0.0
end = time.monotonic() + 2.5
while time.monotonic() < end:
    t = time.monotonic()
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect((sys.argv[1], 5000))
        made += 1
        slowest = max(slowest, time.monotonic() - t)
    except OSError:
        refused += 1
    finally:
        s.close()
    time.sleep(0.01)
print(json.dumps({"made": made, "refused": refused, "slowest_s": round(slowest, 3)}))
PY
}

# one_run MODE N
one_run() {
    local mode=$1 n=$2 d="$W/$1-$2" ctx image pp rp push_pid t0
    mkdir -p "$d"
    ctx="$d/image"
    mkdir -p "$ctx"
    head -c "$((LAYER_MB << 20))" /dev/urandom >"$ctx/payload.bin"
    printf 'FROM scratch\nCOPY payload.bin /payload.bin\nCMD ["/payload.bin"]\n' >"$ctx/Dockerfile"
    image="$NAME:5000/large-$mode-$n:1"
    DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null 2>"$d/build.err" || die "docker build: $(cat "$d/build.err")"
    rm -rf "$ctx"
    throttle
    touch "$d/pulls"
    pull_loop "$d" &
    pp=$!
    PIDS+=("$pp")
    restart_connects "$d" &
    rp=$!
    PIDS+=("$rp")
    t0=$EPOCHREALTIME
    docker push "$image" >"$d/push.out" 2>&1 &
    push_pid=$!
    sleep 4
    [[ -d /proc/$push_pid ]] || log "$mode-$n: the push ended within 4 s (raise LAYER_MB or lower RATE)"
    set +e
    "$REGCERT" --config "$W/$mode.toml" --log-format json renew --force >"$d/regcert.out" 2>"$d/regcert.log"
    echo $? >"$d/rc"
    wait "$push_pid"
    echo $? >"$d/push.rc"
    set -e
    elapsed_s "$t0" >"$d/push.wall"
    sleep "$PULL_GAP"
    touch "$d/stop"
    wait "$pp" || true
    wait "$rp" || true
    PIDS=("${PIDS[@]:0:${#PIDS[@]}-2}")
    docker rmi -f "$image" >/dev/null 2>&1 || true
    "$PY" - "$d" "$mode" >"$d/result.json" <<'PY'
import json, sys
d, mode = sys.argv[1], sys.argv[2]
push = open(f"{d}/push.out").read()
pulls = open(f"{d}/pulls").read().split()
drain_ms, drain_end, held_ms = None, None, None
for line in open(f"{d}/regcert.log"):
    if not line.startswith("{"):
        continue
    f = json.loads(line).get("fields", {})
    if str(f.get("message", "")).startswith("drain:") and "waited_ms" in f:
        drain_ms, drain_end = f["waited_ms"], f["message"]
    if str(f.get("message", "")).startswith("hold:") and "held_ms" in f:
        held_ms = f["held_ms"]
try:
    connects = json.load(open(f"{d}/connects.json"))
except (FileNotFoundError, ValueError):
    connects = None
cut = int(open(f"{d}/push.rc").read()) != 0 or "Retrying" in push
print(json.dumps({"mode": mode, "rc": int(open(f"{d}/rc").read()), "push_cut": cut,
                  "push_s": float(open(f"{d}/push.wall").read()), "pulls": len(pulls), "failed_pulls": pulls.count("failed"),
                  "drain_waited_ms": drain_ms, "drain_end": drain_end, "held_ms": held_ms, "connects": connects}))
PY
    log "$mode-$n: $(cat "$d/result.json")"
}

for i in $(seq "$RUNS"); do
    one_run nodrain "$i"
    one_run drain "$i"
    one_run hold "$i"
done

"$PY" - "$W" "$RUNS" >"$W/table.md" <<'PY'
import json, statistics, sys
w, runs = sys.argv[1], int(sys.argv[2])
print("| mode | runs | renew exit 0 | pushes cut | pulls failed / pulls | connects refused / tried at the restart "
      "| slowest connect | push time (median) | drain waited (median, max) | held (median, max) |")
print("|---|---|---|---|---|---|---|---|---|---|")
def spread(values):
    return f"{statistics.median(values):.1f} s, {max(values):.1f} s" if values else "—"
for mode, label in (("nodrain", "without drain"), ("drain", "with drain"), ("hold", "with drain + hold")):
    rs = [json.load(open(f"{w}/{mode}-{i}/result.json")) for i in range(1, runs + 1)]
    waited = [r["drain_waited_ms"] / 1000 for r in rs if r["drain_waited_ms"] is not None]
    held = [r["held_ms"] / 1000 for r in rs if r["held_ms"] is not None]
    connects = [r["connects"] for r in rs if r["connects"]]
    tried = sum(c["made"] + c["refused"] for c in connects)
    slowest = max((c["slowest_s"] for c in connects), default=0)
    print(f"| {label} | {len(rs)} | {sum(r['rc'] == 0 for r in rs)} | {sum(r['push_cut'] for r in rs)} "
          f"| {sum(r['failed_pulls'] for r in rs)} / {sum(r['pulls'] for r in rs)} | {sum(c['refused'] for c in connects)} / {tried} | {slowest:.2f} s "
          f"| {statistics.median(r['push_s'] for r in rs):.1f} s | {spread(waited)} | {spread(held)} |")
PY

{
    echo "# Drain benchmark results"
    echo
    echo "Written by \`bench/drain.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    echo "- machine: $(uname -srm), $(nproc) CPUs; Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)"
    echo "- regcert: $REGCERT_VERSION, commit $GIT_REV"
    echo "- per run: a push of one fresh ${LAYER_MB} MB random layer, slowed to $RATE (tc tbf on the container's link);"
    echo "  a pull loop of a small image, $PULL_GAP s between pulls; \`regcert renew --force\` 4 s into the push, which"
    echo "  restarts the registry container (\`docker restart\`) and verifies; with drain: \`drain = \"$DRAIN\"\`;"
    echo "  with hold: also \`hold = \"$HOLD\"\`; a client connecting every 10 ms for 2.5 s from Docker's \`kill\` of the"
    echo "  registry (the restart's stop)"
    echo
    cat "$W/table.md"
    echo
    echo "- A push is cut when \`docker push\` fails or had to retry a layer (\"Retrying in …\"; the docker client then"
    echo "  uploads the layer again from the start). \"drain waited\": regcert's \`waited_ms\` (log line \`drain: …\`),"
    echo "  from the first count of connections to the restart; it includes the second without any connection that"
    echo "  regcert requires before it restarts."
    echo "- Push time: from the start of \`docker push\` to its end. A cut push is retried by the docker client after"
    echo "  5 s and then runs unthrottled (the restart gave the container a new, unshaped link), so its time is no"
    echo "  measure of the cost of the cut; the layer uploaded up to the cut is lost either way."
    echo "- Loop pulls land in the restart by chance: the registry refuses connections only from its process's exit"
    echo "  to the end of its network namespace, a tenth of a second or so (then a connect to its address waits for"
    echo "  ARP until the new namespace answers). The connecting client is in the restart on purpose. Without hold"
    echo "  its connects are refused in that moment, with or without drain (drain waits for the connections that"
    echo "  are open; it cannot hold back new ones). With hold, each waits until the restarted registry listens"
    echo "  (\"slowest connect\"), and none is refused."
    echo "  \"held\": regcert's \`held_ms\` (log line \`hold: new connections let through\`), from the hold to letting"
    echo "  connections through: the restart and the wait until the registry listens again."
} >"$BENCH/drain-results.md"
echo
cat "$W/table.md"
log "written $BENCH/drain-results.md"
