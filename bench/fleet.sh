#!/usr/bin/env bash
# Fleet benchmark (issue 13): regcert nodes sharing one certificate through etcd ([cluster]).
#
#   bench/fleet.sh     # builds regcert (or REGCERT_BIN), runs (~9 min on 2 cores), writes bench/fleet-results.md
#
# On loopback only: a 3-member etcd cluster (Debian's etcd-server), Pebble + pebble-challtestsrv,
# and N regcert nodes. Node i is `node-i` on 127.0.0.(i+1): its own state dir, install dir,
# config, `[metrics] listen`, HTTP-01 responder (on Pebble's HTTP-01 port), and a registry PROCESS
# (`docker-registry serve`, TLS from the node's install dir) under a supervisor loop that starts it
# again whenever it exits. The node's reload command kills the registry and waits until HTTPS
# answers again (as tests/it/common/fleet.rs does); `[certificate.verify]` goes to that registry.
# Rolling one node at a time (max_unavailable = 1), lease_ttl and [daemon] check at their defaults
# (15s; every 10 minutes).
#
# Measured:
#   1. rollout time for SIZES nodes: from the leader's log line "published the new certificate
#      for the fleet" to the last node's "this node's turn is done" (outcome=Verified), for the
#      first issuance and RUNS forced renewals (`regcert cluster renew registry`); and the floor
#      set by the registry restarts: the reload command alone, RESTARTS times, × nodes;
#   2. etcd requests and bytes per idle hour per node (the largest fleet, idle for IDLE_SECS):
#      regcert_cluster_etcd_requests_total from each node's /metrics; TCP bytes of each node's
#      connections to the etcd client ports (`ss -ti`: bytes_sent + bytes_received, segments);
#      etcd's own server-side counters (gRPC messages by method, gRPC message bytes). A check
#      triggered by a change under the prefix measures one check; the hour is extrapolated as
#      idle rate × 3600 s + 6 checks (the default schedule);
#   3. extra RSS of a node in cluster mode: VmRSS of an idle `regcert run` with [cluster] vs the
#      same config without it (one certificate, SETTLE s after the first check), alternated RSS_REPS times.
#
# Knobs: SIZES ("3 10"), RUNS (3), RESTARTS (10), IDLE_SECS (300), SETTLE (5), RSS_REPS (2),
# REGCERT_BIN (use this binary instead of building), KEEP=1 keeps the scratch directory.
# Run it under the test bed's lock when tests may run at the same time:
#   flock /tmp/regcert-it.lock bench/fleet.sh
set -euo pipefail
export LC_ALL=C

# shellcheck source=SCRIPTDIR/../scripts/lib/pebble.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/pebble.sh"
# shellcheck disable=SC2034
LOG_TAG=fleet-bench # the tag of log() lines
SIZES=${SIZES:-3 10}
RUNS=${RUNS:-3}
RESTARTS=${RESTARTS:-10}
IDLE_SECS=${IDLE_SECS:-300}
SETTLE=${SETTLE:-5}
RSS_REPS=${RSS_REPS:-2}
FLEET_NAME=registry.fleet.test
CERT=registry

for tool in pebble pebble-challtestsrv etcd etcdctl docker-registry openssl curl ss awk python3; do
    command -v "$tool" >/dev/null ||
        die "$tool is missing (Debian: apt-get install pebble etcd-server etcd-client docker-registry openssl curl iproute2 python3)"
done
for size in $SIZES; do
    ((size >= 2 && size <= 250)) || die "SIZES: $size nodes; use 2 to 250 (127.0.0.2 to 127.0.0.251)"
done

# ---------------------------------------------------------------------------------------------
# 1. regcert, scratch directory, Pebble, etcd
# ---------------------------------------------------------------------------------------------
scratch_dir W /tmp/regcert-fleet-bench.XXXXXX # removed at exit unless KEEP=1 or a failure
regcert_under_test "$W/regcert"

free_ports P_ACME P_MGMT P_HTTP P_TLS P_DNS P_DNSMGMT P_REG P_METRICS
# shellcheck disable=SC2153 # P_* set by free_ports
start_pebble "$W" "$P_ACME" "$P_MGMT" "$P_HTTP" "$P_TLS" "$P_DNS" "$P_DNSMGMT" 0 || die "pebble did not start; see $W/pebble.log"
curl -sf --cacert "$PEBBLE_ROOT" "https://127.0.0.1:$P_MGMT/roots/0" >"$W/issuing-root.pem"
grep -q 'BEGIN CERTIFICATE' "$W/issuing-root.pem" || die "no Pebble issuing root"

# pebble_point_at IP: the CA's HTTP-01 validation of FLEET_NAME goes to the node on IP (the
# challtestsrv adds to a name's addresses and Pebble dials the first: clear it first).
challtest() { curl -sSf --max-time 10 -X POST --data-binary "$2" "http://127.0.0.1:$P_DNSMGMT$1" >/dev/null; }
pebble_point_at() {
    challtest /clear-a "{\"host\":\"$FLEET_NAME.\"}"
    challtest /add-a "{\"host\":\"$FLEET_NAME.\",\"addresses\":[\"$1\"]}"
}

# A 3-member etcd cluster on 127.0.0.1, as tests/it/common/etcd.rs starts it; each member's
# metrics on a port of their own, so reading them adds nothing to the client ports' traffic.
ETCD_CLIENT=() ETCD_METRICS=()
ETCD_INITIAL=""
for m in 1 2 3; do
    free_ports peer client metrics
    # shellcheck disable=SC2154 # set by free_ports
    ETCD_PEER[m]=$peer ETCD_CLIENT[m]=$client ETCD_METRICS[m]=$metrics
    ETCD_INITIAL+="${ETCD_INITIAL:+,}n$m=http://127.0.0.1:$peer"
done
for m in 1 2 3; do
    etcd --name "n$m" --data-dir "$W/etcd/n$m" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER[m]}" --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER[m]}" \
        --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT[m]}" --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT[m]}" \
        --listen-metrics-urls "http://127.0.0.1:${ETCD_METRICS[m]}" \
        --initial-cluster "$ETCD_INITIAL" --initial-cluster-state new --initial-cluster-token "$W" >"$W/etcd-n$m.log" 2>&1 &
    PIDS+=("$!")
done
ETCD_ENDPOINTS=http://127.0.0.1:${ETCD_CLIENT[1]},http://127.0.0.1:${ETCD_CLIENT[2]},http://127.0.0.1:${ETCD_CLIENT[3]}
etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" --dial-timeout=2s --command-timeout=5s "$@"; }
for ((i = 0; ; i++)); do
    etcdctl_ endpoint health >/dev/null 2>&1 && break
    ((i < 200)) || die "etcd not healthy within 20 s; see $W/etcd-n*.log"
    sleep 0.1
done
log "etcd: 3 members healthy at $ETCD_ENDPOINTS; Pebble at $PEBBLE_URL"
"$REGCERT" cluster new-key "$W/fleet.key" >/dev/null

# ---------------------------------------------------------------------------------------------
# 2. Registry processes: a supervisor loop each, and the reload command
# ---------------------------------------------------------------------------------------------
# The reload command of every node: kill the registry (its supervisor starts it again), then wait
# (at most 10 s) until the new process answers HTTPS. Same script as the test bed's.
cat >"$W/reload-registry.sh" <<'SH'
# reload-registry.sh PID_FILE URL: restart the registry whose pid is in PID_FILE; wait until URL answers.
old=$(cat "$1") || exit 1
kill -TERM "$old" || { echo "no registry process $old to restart" >&2; exit 1; }
i=0
while :; do
  if [ "$(cat "$1" 2>/dev/null)" != "$old" ] && curl -sk -o /dev/null --max-time 1 "$2"; then exit 0; fi
  i=$((i + 1))
  if [ $i -ge 200 ]; then echo "the registry did not come back at $2 within 10 s" >&2; exit 1; fi
  sleep 0.05
done
SH

node_ip() { echo "127.0.0.$(($1 + 1))"; }

# start_registry DIR IP INSTALL_DIR: docker-registry on IP:P_REG serving INSTALL_DIR/domain.{crt,key},
# under a loop that starts it again when it exits (its pid in DIR/registry.pid).
start_registry() {
    local dir=$1 ip=$2 install=$3
    mkdir -p "$dir/storage"
    printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s:%s\n  secret: regcert-bench\n  tls:\n    certificate: %s\n    key: %s\n' \
        "$dir/storage" "$ip" "$P_REG" "$install/domain.crt" "$install/domain.key" >"$dir/config.yml"
    (
        child=
        trap '[ -z "$child" ] || kill "$child" 2>/dev/null; wait; exit 0' TERM
        while :; do
            started=$SECONDS
            docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 &
            child=$!
            echo "$child" >"$dir/registry.pid.tmp" && mv "$dir/registry.pid.tmp" "$dir/registry.pid"
            wait "$child" || true
            # one that dies at once (a bad pair) is not restarted in a tight loop
            ((SECONDS - started >= 1)) || sleep 0.2
        done
    ) &
    SUPERVISOR=$!
    PIDS+=("$SUPERVISOR")
}

# wait_https IP: until the registry on IP answers HTTPS (20 s), or die.
wait_https() {
    wait_url 20 -k "https://$1:$P_REG/v2/" || die "the registry on $1:$P_REG did not answer HTTPS; see its registry.log"
}

# self_signed DIR: a self-signed pair for FLEET_NAME installed as DIR/domain.{crt,key} (the node's
# certificate before the fleet's first one), renamed into place.
self_signed() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$FLEET_NAME" \
        -addext "subjectAltName=DNS:$FLEET_NAME" -keyout "$1/.new.key" -out "$1/.new.crt" 2>/dev/null
    chmod 600 "$1/.new.key"
    mv "$1/.new.key" "$1/domain.key"
    mv "$1/.new.crt" "$1/domain.crt"
}

# write_config FILE I DIR PREFIX CLUSTER(yes|no): node I's config, with or without [cluster].
write_config() {
    local file=$1 i=$2 dir=$3 prefix=$4 cluster=$5 ip endpoints
    ip=$(node_ip "$i")
    endpoints=$(sed 's/,/", "/g; s/^/"/; s/$/"/' <<<"$ETCD_ENDPOINTS")
    {
        printf 'state_dir = "%s"\n' "$dir/state"
        acme_toml "$PEBBLE_URL" "$PEBBLE_ROOT" ops@example.com "$ip:$P_HTTP"
        printf '\n[metrics]\nlisten = "%s:%s"\n' "$ip" "$P_METRICS"
        if [[ $cluster == yes ]]; then
            printf '\n[cluster]\nendpoints = [%s]\nprefix = "%s"\nnode = "node-%d"\nsecret_key_file = "%s"\nmax_unavailable = 1\n' \
                "$endpoints" "$prefix" "$i" "$W/fleet.key"
        fi
        cert_toml "$CERT" "$FLEET_NAME" "$dir/install"
        printf '[certificate.reload]\ncommand = ["/bin/sh", "%s", "%s", "%s"]\ndisruptive = true\n' \
            "$W/reload-registry.sh" "$dir/registry/registry.pid" "https://$ip:$P_REG/v2/"
        printf '[certificate.verify]\nurl = "https://%s:%s/v2/"\nconnect_to = "%s:%s"\nca_bundle = "%s"\ntimeout = "20s"\n' \
            "$FLEET_NAME" "$P_REG" "$ip" "$P_REG" "$W/issuing-root.pem"
    } >"$file"
}

# ---------------------------------------------------------------------------------------------
# 3. A fleet of N nodes
# ---------------------------------------------------------------------------------------------
N=0 PREFIX=""
NODE_PID=() NODE_LOG=() NODE_CFG=() NODE_DIR=() NODE_SUP=()
PUBLISHED="published the new certificate for the fleet"
TURN="this node's turn in the rollout"
DONE="this node's turn is done"

count() { grep -cF -- "$2" "$1" || true; } # count LOG TEXT: lines of LOG with TEXT

# start_node I [CONFIG]: `regcert run` as node I (start_daemon: scripts/lib/common.sh).
start_node() {
    local i=$1
    start_daemon "${2:-${NODE_CFG[i]}}" "${NODE_DIR[i]}/regcert.$((++NODE_STARTS)).log"
    NODE_PID[i]=$DPID NODE_LOG[i]=$DLOG
}
NODE_STARTS=0
stop_node() { DPID=${NODE_PID[$1]} DLOG=${NODE_LOG[$1]} stop_daemon; }

start_fleet() { # start_fleet N
    N=$1 PREFIX=/regcert-bench-$$-$1/
    local i ip
    for ((i = 1; i <= N; i++)); do
        NODE_DIR[i]=$W/fleet$N/node-$i
        mkdir -p "${NODE_DIR[i]}/install" "${NODE_DIR[i]}/registry"
        NODE_CFG[i]=${NODE_DIR[i]}/regcert.toml
        write_config "${NODE_CFG[i]}" "$i" "${NODE_DIR[i]}" "$PREFIX" yes
        self_signed "${NODE_DIR[i]}/install"
        start_registry "${NODE_DIR[i]}/registry" "$(node_ip "$i")" "${NODE_DIR[i]}/install"
        NODE_SUP[i]=$SUPERVISOR
    done
    "$REGCERT" --config "${NODE_CFG[1]}" check-config >"$W/check-config.$N.txt" 2>&1 ||
        die "regcert check-config rejects the generated config (see $W/check-config.$N.txt)"
    for ((i = 1; i <= N; i++)); do wait_https "$(node_ip "$i")"; done
    # The first order is validated at node-1, the first to start (it leads and orders at once,
    # maybe before the others' responders listen); renewals at the last node (see below).
    pebble_point_at "$(node_ip 1)"
}

# run_fleet: node-1 first, until it leads (so the leader, and canary, is known), then the others.
run_fleet() {
    local i
    start_node 1
    for ((i = 0; i < 300; i++)); do
        (($(count "${NODE_LOG[1]}" "this node leads the fleet") > 0)) && break
        kill -0 "${NODE_PID[1]}" 2>/dev/null || die "node-1 exited: $(tail -n 5 "${NODE_LOG[1]}")"
        sleep 0.1
    done
    (($(count "${NODE_LOG[1]}" "this node leads the fleet") > 0)) || die "node-1 did not lead within 30 s (log: ${NODE_LOG[1]})"
    for ((i = 2; i <= N; i++)); do start_node "$i"; done
}

stop_fleet() {
    local i
    for ((i = 1; i <= N; i++)); do
        ! kill -0 "${NODE_PID[i]}" 2>/dev/null || stop_node "$i"
    done
    for ((i = 1; i <= N; i++)); do kill "${NODE_SUP[i]}" 2>/dev/null || true; done
    for ((i = 1; i <= N; i++)); do wait "${NODE_SUP[i]}" 2>/dev/null || true; done
}

# All lines with TEXT in node I's logs (every start), in order.
node_lines() { cat "${NODE_DIR[$1]}"/regcert.*.log | sed 's/\x1b\[[0-9;]*m//g' | grep -F -- "$2" || true; }
# The unix time (6 decimals) of line K (1-based) of node I's lines with TEXT.
line_time() { node_lines "$1" "$3" | sed -n "$2p" | awk '{ print $1 }' | date -u -f - +%s.%6N; }

# wait_rollout K: until the fleet has published K certificates and every node's turn is done K
# times; dies on a halt, a node that exits, or after a timeout.
wait_rollout() {
    local k=$1 deadline=$((SECONDS + 60 + 15 * N)) i pubs all
    while :; do
        pubs=0 all=1
        for ((i = 1; i <= N; i++)); do
            kill -0 "${NODE_PID[i]}" 2>/dev/null || die "node-$i exited: $(tail -n 5 "${NODE_LOG[i]}")"
            pubs=$((pubs + $(node_lines "$i" "$PUBLISHED" | grep -c . || true)))
            (($(node_lines "$i" "$DONE" | grep -c . || true) >= k)) || all=0
            [[ -z $(node_lines "$i" "the rollout is halted") ]] || die "the rollout halted at node-$i: $(node_lines "$i" "halted")"
        done
        ((pubs >= k && all == 1)) && return 0
        ((SECONDS < deadline)) || die "rollout $k of $N nodes not done within $((60 + 15 * N)) s (logs: $W/fleet$N/node-*/regcert.*.log)"
        sleep 0.2
    done
}

# record_rollout K LABEL T_REQUEST: the times of rollout K → a row in $W/rollouts.tsv:
# N label total_s per_node_s mean_turn_s mean_handover_s order_s serial
record_rollout() {
    local k=$1 label=$2 t_req=$3 i t_pub serial t_start t_done last=0 turns=0 outcome
    t_pub=$(for ((i = 1; i <= N; i++)); do node_lines "$i" "$PUBLISHED"; done | sort | sed -n "${k}p")
    serial=$(sed -n 's/.*serial=\([^ ]*\).*/\1/p' <<<"$t_pub")
    t_pub=$(awk '{ print $1 }' <<<"$t_pub" | date -u -f - +%s.%6N)
    for ((i = 1; i <= N; i++)); do
        node_lines "$i" "$TURN" | sed -n "${k}p" | grep -qF "serial=$serial" || die "node-$i's turn $k is not for serial $serial: $(node_lines "$i" "$TURN")"
        outcome=$(node_lines "$i" "$DONE" | sed -n "${k}p")
        grep -q 'outcome=Verified' <<<"$outcome" || die "node-$i's turn $k: $outcome"
        t_start=$(line_time "$i" "$k" "$TURN")
        t_done=$(line_time "$i" "$k" "$DONE")
        turns=$(awk -v a="$turns" -v s="$t_start" -v d="$t_done" 'BEGIN { printf "%.6f", a + d - s }')
        last=$(awk -v a="$last" -v d="$t_done" 'BEGIN { print (d > a) ? d : a }')
    done
    awk -v n="$N" -v l="$label" -v p="$t_pub" -v e="$last" -v t="$turns" -v r="$t_req" -v s="$serial" 'BEGIN {
        total = e - p
        printf "%d\t%s\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%s\n", n, l, total, total / n, t / n, (total - t) / n,
            (r == "-") ? "-" : sprintf("%.2f", p - r), s }' >>"$W/rollouts.tsv"
    log "$N nodes, $label: $(tail -n 1 "$W/rollouts.tsv" | cut -f3) s from published to all verified (serial $serial)"
}

# The fleet's own view: every live node verified serial SERIAL and the rollout is complete.
check_status() {
    "$REGCERT" --config "${NODE_CFG[2]}" cluster status --json >"$W/status.json" || die "regcert cluster status failed"
    "$PY" - "$W/status.json" "$N" <<'PY' || die "cluster status disagrees: $(cat "$W/status.json")"
import json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[2])
c = s["certificates"][0]
ok = c["rollout"] == "complete" and sum(1 for r in c["results"] if r["outcome"] == "verified" and r["sha256"] == c["sha256"]) == n
sys.exit(0 if ok else 1)
PY
}

# ---------------------------------------------------------------------------------------------
# 4. Measuring one node: /metrics, TCP bytes to etcd, VmRSS
# ---------------------------------------------------------------------------------------------
metric() { # metric I NAME: a sample of node I's /metrics
    curl -sf --max-time 5 "http://$(node_ip "$1"):$P_METRICS/metrics" | awk -v k="$2" '$1 == k { print $2; f = 1 } END { if (!f) print 0 }'
}
# ss_sample FILE: one line per TCP connection of any process to the etcd client ports (any state
# that still has tcp_info): "time pid local peer bytes segments", from the kernel's tcp_info:
# bytes_sent + bytes_received (TCP payload) and segs_out + segs_in (every segment, pure ACKs too).
# Connections come and go, so counters are kept per connection (see idle_table).
ss_sample() {
    ss -tinpH "( dport = :${ETCD_CLIENT[1]} or dport = :${ETCD_CLIENT[2]} or dport = :${ETCD_CLIENT[3]} )" |
        awk -v t="$EPOCHREALTIME" '
            /^[^ \t]/ { pid = ""; if (match($0, /pid=[0-9]+/)) pid = substr($0, RSTART + 4, RLENGTH - 4); local = $4; peer = $5; next }
            pid != "" { b = 0; s = 0
                for (i = 1; i <= NF; i++) { split($i, kv, ":")
                    if (kv[1] == "bytes_sent" || kv[1] == "bytes_received") b += kv[2]
                    if (kv[1] == "segs_out" || kv[1] == "segs_in") s += kv[2] }
                print t, pid, local, peer, b, s; pid = "" }' >>"$1"
}
# ss_sampler: ss_sample every second into $W/ss.log, in the background (SAMPLER).
ss_sampler() {
    while :; do
        ss_sample "$W/ss.log"
        sleep 1
    done &
    SAMPLER=$!
    PIDS+=("$SAMPLER")
}
checks_of() { node_lines "$1" " certificates: " | grep -cE '[0-9]+ certificates: [0-9]+ renewed' || true; }
# etcd's server-side counters, summed over the members: gRPC messages received per method, and
# the gRPC message bytes received and sent (etcd_network_client_grpc_*).
etcd_counters() {
    local m
    for m in 1 2 3; do curl -sf --max-time 5 "http://127.0.0.1:${ETCD_METRICS[m]}/metrics"; done | awk '
        /^grpc_server_msg_received_total/ { match($0, /grpc_method="[^"]*"/); k = substr($0, RSTART + 13, RLENGTH - 14); v[k] += $2 }
        /^etcd_network_client_grpc_received_bytes_total/ { v["bytes_in"] += $2 }
        /^etcd_network_client_grpc_sent_bytes_total/ { v["bytes_out"] += $2 }
        END { for (k in v) print k, v[k] }' | sort
}

# snapshot FILE: per node "i pid requests errors checks", then "etcd KEY VALUE"; and a sample of
# the TCP connections at that moment ($W/ss.sync.log), then the time of the snapshot.
snapshot() {
    local i
    {
        for ((i = 1; i <= N; i++)); do
            echo "$i ${NODE_PID[i]} $(metric "$i" regcert_cluster_etcd_requests_total) $(metric "$i" regcert_cluster_etcd_errors_total) $(checks_of "$i")"
        done
        etcd_counters | sed 's/^/etcd /'
    } >"$1"
    ss_sample "$W/ss.sync.log"
    SNAP_T=$EPOCHREALTIME
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# wait_checks I COUNT: until node I has logged COUNT checks (60 s).
wait_checks() {
    local deadline=$((SECONDS + 60))
    while (($(checks_of "$1") < $2)); do
        kill -0 "${NODE_PID[$1]}" 2>/dev/null || die "node-$1 exited: $(tail -n 5 "${NODE_LOG[$1]}")"
        ((SECONDS < deadline)) || die "node-$1: no check $2 within 60 s (log: ${NODE_LOG[$1]})"
        sleep 0.1
    done
}

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MEM=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cpu_idle() { # cpu_idle STAT_LINE_BEFORE STAT_LINE_AFTER
    printf '%s\n%s\n' "$1" "$2" | awk '{ t = 0; for (i = 2; i <= NF; i++) t += $i; idle[NR] = $5 + $6; tot[NR] = t }
        END { printf "%.0f%%", 100 * (idle[2] - idle[1]) / (tot[2] - tot[1]) }'
}
IDLE_BEFORE=$(a=$(head -n 1 /proc/stat); sleep 2; cpu_idle "$a" "$(head -n 1 /proc/stat)")
STAT_START=$(head -n 1 /proc/stat)
START=$EPOCHSECONDS
log "CPU idle before the measurements: $IDLE_BEFORE"

# ---------------------------------------------------------------------------------------------
# 5. Rollouts, the restart floor, the idle cost and RSS
# ---------------------------------------------------------------------------------------------
: >"$W/rollouts.tsv"
LAST_SIZE=${SIZES##* }
FLOOR_DONE=0
declare -A R
for size in $SIZES; do
    start_fleet "$size"
    if ((FLOOR_DONE == 0)); then
        # The floor: node-1's reload command alone, before any regcert runs.
        log "registry restart alone (the reload command), $RESTARTS times"
        for ((r = 1; r <= RESTARTS; r++)); do
            t0=$EPOCHREALTIME
            sh "$W/reload-registry.sh" "${NODE_DIR[1]}/registry/registry.pid" "https://$(node_ip 1):$P_REG/v2/" || die "the reload command failed"
            elapsed_s "$t0" "$EPOCHREALTIME" >>"$W/restarts.txt"
        done
        FLOOR_DONE=1
    fi
    log "$N nodes: first issuance"
    run_fleet
    wait_rollout 1
    record_rollout 1 "first issuance" -
    check_status
    # From now on the CA validates at the last node, not the leader: HTTP-01 goes through etcd.
    pebble_point_at "$(node_ip "$N")"
    for ((run = 1; run <= RUNS; run++)); do
        sleep "$SETTLE" # the checks the last results triggered are over
        t_req=$EPOCHREALTIME
        "$REGCERT" --config "${NODE_CFG[2]}" cluster renew "$CERT" >"$W/renew.out" 2>&1 || die "cluster renew failed: $(cat "$W/renew.out")"
        wait_rollout $((run + 1))
        record_rollout $((run + 1)) "renewal $run" "$t_req"
        check_status
    done
    R[orders.$N]=$(grep -c "Issued certificate serial" "$W/pebble.log" || true)

    if [[ $size == "$LAST_SIZE" ]]; then
        # Idle: nothing due, nothing changing. Then one check, triggered through the watch.
        # Settle: the last rollout's checks are over, and the connections they opened without a
        # stream are closed again (~20 s after their last use, as the samples show; which side closes them was not examined).
        sleep 30
        LEADER=$(etcdctl_ get --print-value-only "${PREFIX}leader")
        log "$N nodes idle for $IDLE_SECS s (leader $LEADER)"
        ss_sampler
        snapshot "$W/idle.0"
        T0=$SNAP_T
        sleep "$IDLE_SECS"
        snapshot "$W/idle.1"
        T1=$SNAP_T
        log "one check on every node, triggered by a change under the prefix"
        etcdctl_ put "${PREFIX}bench-poke" 1 >/dev/null
        for ((i = 1; i <= N; i++)); do wait_checks "$i" $(($(awk -v i="$i" '$1 == i { print $5 }' "$W/idle.1") + 1)); done
        sleep 30 # until the connections that check opened are closed again
        snapshot "$W/idle.2"
        T2=$SNAP_T
        kill "$SAMPLER"
        wait "$SAMPLER" 2>/dev/null || true

        # RSS: the nodes as they are now, then node-1 afresh with and without [cluster].
        for ((i = 1; i <= N; i++)); do status_kb "${NODE_PID[i]}" VmRSS; done | sort -n >"$W/rss.fleet"
        R[threads.fleet]=$(status_kb "${NODE_PID[1]}" Threads)
        write_config "$W/plain.toml" 1 "${NODE_DIR[1]}" "$PREFIX" no
        stop_node 1
        for ((rep = 1; rep <= RSS_REPS; rep++)); do
            for mode in cluster plain; do
                cfg=${NODE_CFG[1]}
                [[ $mode == cluster ]] || cfg=$W/plain.toml
                c0=$(checks_of 1)
                start_node 1 "$cfg"
                wait_checks 1 $((c0 + 1))
                sleep "$SETTLE"
                echo "$mode $(status_kb "$DPID" VmRSS) $(status_kb "$DPID" VmHWM) $(status_kb "$DPID" RssAnon) $(status_kb "$DPID" RssFile) $(status_kb "$DPID" Threads)" >>"$W/rss.txt"
                log "RSS $mode: $(tail -n 1 "$W/rss.txt")"
                stop_node 1
            done
        done
    fi
    stop_fleet
done
ELAPSED=$((EPOCHSECONDS - START))
IDLE_DURING=$(cpu_idle "$STAT_START" "$(head -n 1 /proc/stat)")

# ---------------------------------------------------------------------------------------------
# 6. Report
# ---------------------------------------------------------------------------------------------
RESTART_MEDIAN=$(sort -n "$W/restarts.txt" | awk '{ a[NR] = $1 } END { printf "%.3f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
RESTART_RANGE=$(sort -n "$W/restarts.txt" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.3f–%.3f", lo, hi }')

rollout_table() {
    echo "| nodes | rollout | leader has it → every node verified | ÷ nodes | a node's turn (mean: install → restart → verify, in its slot) | hand-over to the next node (mean) | \`cluster renew\` → published (the order) | serial |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -F'\t' '{ printf "| %d | %s | %.2f s | %.2f s | %.2f s | %.2f s | %s | `%s` |\n", $1, $2, $3, $4, $5, $6, ($7 == "-") ? "—" : $7 " s", $8 }' "$W/rollouts.tsv"
}
floor_table() {
    echo "| nodes | renewals: leader has it → every node verified (mean of $RUNS) | per node | floor: registry restart × nodes | above the floor, per node |"
    echo "|---|---|---|---|---|"
    for size in $SIZES; do
        awk -F'\t' -v n="$size" -v r="$RESTART_MEDIAN" '$1 == n && $2 ~ /^renewal/ { t += $3; c++ }
            END { m = t / c; printf "| %d | **%.2f s** | %.2f s | %.2f s (%d × %.3f s) | %.2f s |\n", n, m, m / n, r * n, n, r, (m - r * n) / n }' "$W/rollouts.tsv"
    done
}

# idle_rates: per node i and for etcd's counters, (window W over T s, k checks; poke P over d s,
# m checks) → idle rate r and one check c from W = rT + kc, P = rd + mc; hour = 3600 r + 6 c.
idle_table() {
    "$PY" - "$W/idle.0" "$W/idle.1" "$W/idle.2" "$T0" "$T1" "$T2" "$N" "${LEADER#node-}" "$W/ss.log" "$W/ss.sync.log" <<'PY'
import sys
f0, f1, f2 = (dict() for _ in range(3))
pids = {}
def load(path, d):
    for line in open(path):
        p = line.split()
        if p[0] == "etcd":
            d[("etcd", p[1])] = float(p[2])
        else:
            i = int(p[0])
            pids[p[1]] = i
            for k, v in zip(("req", "err", "checks"), p[2:]):
                d[(i, k)] = float(v)
for path, d in zip(sys.argv[1:4], (f0, f1, f2)):
    load(path, d)
t0, t1, t2 = map(float, sys.argv[4:7]); n = int(sys.argv[7]); leader = int(sys.argv[8])
# TCP counters per connection (pid, local, peer), from every sample: a connection's value at time
# t is its last sample at or before t (0 before it was first seen); a node's value is the sum
# over its connections. A connection that closes loses at most its last second (1 s samples).
series = {}
for path in sys.argv[9:11]:
    for line in open(path):
        t, pid, local, peer, b, s = line.split()
        if pid in pids:
            series.setdefault((pid, local, peer), []).append((float(t), float(b), float(s)))
def tcp_at(i, t, j):
    total = 0.0
    for (pid, _, _), pts in series.items():
        if pids[pid] != i:
            continue
        seen = [p for p in pts if p[0] <= t + 1e-3]
        if seen:
            total += max(seen)[j]
    return total
for i in range(1, n + 1):
    for d, t in ((f0, t0), (f1, t1), (f2, t2)):
        d[(i, "bytes")] = tcp_at(i, t, 1)
        d[(i, "segs")] = tcp_at(i, t, 2)
def conns(i, a, b):  # connections of node i alive at some moment in [a, b]; opened, closed inside
    alive = opened = closed = 0
    for (pid, _, _), pts in series.items():
        if pids[pid] != i:
            continue
        first, last = min(p[0] for p in pts), max(p[0] for p in pts)
        if first <= b and last >= a:
            alive += 1
            opened += first > a + 1.5
            closed += last < b - 1.5
    return alive, opened, closed
T, dd = t1 - t0, t2 - t1
def solve(w, p, k, m):
    det = T * m - k * dd
    r = (w * m - k * p) / det
    c = (T * p - dd * w) / det
    return r, c
def node(i, key):
    w = f1[(i, key)] - f0[(i, key)]
    p = f2[(i, key)] - f1[(i, key)]
    k = f1[(i, "checks")] - f0[(i, "checks")]
    m = f2[(i, "checks")] - f1[(i, "checks")]
    r, c = solve(w, p, k, m)
    return w, k, r, c, 3600 * r + 6 * c
def fmt(x, unit=""):
    if unit == "B":
        return f"{x / 1024:.1f} KiB" if x < 1048576 else f"{x / 1048576:.2f} MiB"
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"
def row(label, key, unit="", wire=False):
    per = {}
    for i in range(1, n + 1):
        w, k, r, c, h = node(i, key)
        if wire:  # + 52 bytes of IPv4/TCP header (with timestamps) per segment
            ws, _, rs, cs, hs = node(i, "segs")
            w, r, c, h = w + 52 * ws, r + 52 * rs, c + 52 * cs, h + 52 * hs
        per[i] = (w, k, r, c, h)
    fol = [per[i] for i in per if i != leader]
    mean = lambda xs, j: sum(x[j] for x in xs) / len(xs)
    allv = list(per.values())
    print(f"| {label} | **{fmt(mean(allv, 4), unit)}** | {fmt(per[leader][4], unit)} | {fmt(mean(fol, 4), unit)} "
          f"| {fmt(mean(allv, 2) * 3600, unit)} | {fmt(mean(allv, 3), unit)} (leader {fmt(per[leader][3], unit)}) "
          f"| {fmt(mean(allv, 0), unit)} ({mean(allv, 1):.0f} scheduled checks) |")
print(f"| per node | **per idle hour** (mean of {n} nodes) | leader | followers (mean) | of which between checks (idle rate × 3600 s) | one check | raw: the {T:.0f} s window |")
print("|---|---|---|---|---|---|---|")
row("etcd requests (`regcert_cluster_etcd_requests_total`)", "req")
row("… failed (`regcert_cluster_etcd_errors_total`)", "err")
row("TCP payload to + from etcd (`ss -ti`: bytes_sent + bytes_received)", "bytes", "B")
row("… on the wire (+ 52 B IPv4/TCP header per segment, ACKs included)", "bytes", "B", wire=True)
row("TCP segments to + from etcd (segs_out + segs_in)", "segs")
print()
for what, a, b in (("the idle window", t0, t1), ("the triggered check (and the 30 s after it)", t1, t2)):
    cs = [conns(i, a, b) for i in range(1, n + 1)]
    print(f"- TCP connections of a node to etcd during {what}, mean of {n} nodes: {sum(c[0] for c in cs) / n:.1f} in use, "
          f"{sum(c[1] for c in cs) / n:.1f} opened and {sum(c[2] for c in cs) / n:.1f} closed in it (from the 1 s samples).")
# etcd's side, the whole fleet ÷ nodes (k, m: node-1's checks; they run at the same moments)
k = f1[(1, "checks")] - f0[(1, "checks")]; m = f2[(1, "checks")] - f1[(1, "checks")]
keys = sorted({key[1] for key in f1 if key[0] == "etcd"})
parts = []
for key in keys:
    w = f1[("etcd", key)] - f0[("etcd", key)]; p = f2[("etcd", key)] - f1[("etcd", key)]
    if w == 0 and p == 0:
        continue
    r, c = solve(w, p, k, m)
    parts.append((key, (3600 * r + 6 * c) / n, 3600 * r / n, c / n, w / n))
print()
print(f"etcd's own counters (3 members summed, ÷ {n} nodes; per idle hour, of which between checks, one check, raw window):")
print()
print("| etcd counter | per node per idle hour | between checks | one check | raw window |")
print("|---|---|---|---|---|")
for key, h, idle, c, w in parts:
    unit = "B" if key.startswith("bytes") else ""
    label = {"bytes_in": "gRPC message bytes received from clients", "bytes_out": "gRPC message bytes sent to clients"}.get(key, f"gRPC messages received, `{key}`")
    print(f"| {label} | {fmt(h, unit)} | {fmt(idle, unit)} | {fmt(c, unit)} | {fmt(w, unit)} |")
PY
}

rss_table() {
    echo "| \`regcert run\`, one certificate, idle, $SETTLE s after its first check | VmRSS | VmHWM | RssAnon | RssFile | threads |"
    echo "|---|---|---|---|---|---|"
    awk '{ printf "| %s (run %d) | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %d |\n", ($1 == "cluster") ? "with [cluster]" : "without [cluster]", ++c[$1], $2 / 1024, $3 / 1024, $4 / 1024, $5 / 1024, $6 }' "$W/rss.txt"
    awk '{ s[$1] += $2; a[$1] += $4; n[$1]++ } END {
        printf "| **extra in cluster mode** (mean with − mean without) | **%+.1f MiB** (%+d kB) | | %+.1f MiB | | |\n",
            (s["cluster"] / n["cluster"] - s["plain"] / n["plain"]) / 1024, s["cluster"] / n["cluster"] - s["plain"] / n["plain"],
            (a["cluster"] / n["cluster"] - a["plain"] / n["plain"]) / 1024 }' "$W/rss.txt"
    awk -v n="$LAST_SIZE" -v th="${R[threads.fleet]}" '{ v[NR] = $1 } END {
        printf "| the %d fleet nodes after %s rollouts and the idle window (min / median / max) | %.1f / %.1f / %.1f MiB | | | | %d |\n",
            n, "their", v[1] / 1024, v[int((NR + 1) / 2)] / 1024, v[NR] / 1024, th }' "$W/rss.fleet"
}

{
    echo "# Fleet benchmark results"
    echo
    echo "Written by \`bench/fleet.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (measurements took ${ELAPSED} s)."
    echo
    echo "- machine: $(uname -srm), $(nproc) CPUs ($CPU_MODEL), $MEM RAM, $(. /etc/os-release && echo "$PRETTY_NAME"); CPU idle before: $IDLE_BEFORE, during the measurements: $IDLE_DURING (a shared machine: other work slows every step)"
    echo "- regcert: $REGCERT_VERSION, commit $GIT_REV (release build)"
    echo "- etcd $(etcd --version | awk '/etcd Version/ { print $3 }'): 3 members on 127.0.0.1 (plain HTTP, no auth); Pebble $(dpkg-query -W -f '${Version}' pebble 2>/dev/null || echo unknown) (\`PEBBLE_WFE_NONCEREJECT=0\`) with pebble-challtestsrv sending the CA's HTTP-01 validation of the renewals to the last node (not the leader; the first order's to node-1, the leader); registry: $(docker-registry --version | awk '{ print $NF }') (\`docker-registry serve\`, one process per node)"
    echo "- every node: \`regcert run\` with \`[cluster]\` (max_unavailable = 1, lease_ttl and timeout at their defaults: 15 s, 5 s), \`[daemon] check\` at its default (every 10 minutes), its own state and install dir, metrics and HTTP-01 responder on its own 127.0.0.(i+1); reload = kill the registry (a supervisor loop starts it again) and wait until HTTPS answers; verify = \`GET https://$FLEET_NAME:PORT/v2/\` at its own registry, trusting Pebble's root"
    echo
    echo "## Rollout time"
    echo
    echo "From the leader's log line \"$PUBLISHED\" (the certificate is in etcd) to the last node's"
    echo "\"$DONE\" (outcome=Verified); every node's turn checked to be for the published serial, and"
    echo "\`regcert cluster status --json\` to show the rollout complete with every node verified."
    echo "Renewals are forced with \`regcert cluster renew $CERT\` (from node-2's config), $SETTLE s after the previous rollout."
    echo "Orders at Pebble: $(for size in $SIZES; do printf '%s nodes: %s; ' "$size" "${R[orders.$size]}"; done | sed 's/; $//') (cumulative: one per rollout, not one per node)."
    echo
    rollout_table
    echo
    echo "### Against the floor set by the registry restarts"
    echo
    echo "The reload command alone (kill the registry, wait until the new process answers HTTPS; polls every 50 ms), $RESTARTS times on one node"
    echo "before regcert ran: median **$RESTART_MEDIAN s** ($RESTART_RANGE s). One node at a time, a rollout cannot be faster than restart × nodes."
    echo
    floor_table
    echo
    echo "A node's turn is the time between its lines \"$TURN\" and \"$DONE\": install, the restart,"
    echo "verify, recording its result in etcd. The hand-over is the rest: the node giving its slot back, the others"
    echo "hearing of it through their etcd watch (debounced 200 ms), a check, taking the slot."
    echo
    echo "## etcd cost of an idle node ($LAST_SIZE nodes, lease_ttl 15 s, check every 10 minutes)"
    echo
    echo "The fleet idle for $IDLE_SECS s (nothing due, nothing changing), counters read from every node before and after;"
    echo "then one check on every node, triggered by writing a key under the prefix (their watch starts a check: the same pass as"
    echo "a scheduled one, plus one watch event). From the window (W over T s, k scheduled checks) and that check (P over d s, m checks):"
    echo "idle rate r and one check c solve W = rT + kc, P = rd + mc; **per idle hour = 3600 s × r + 6 checks × c** (the default schedule)."
    echo "The window is extrapolated linearly, so $IDLE_SECS s stand for the hour."
    echo
    idle_table
    echo
    echo "- What is counted: \`regcert_cluster_etcd_requests_total\` counts regcert's requests to etcd (each unary call: get, txn, put, lease grant,"
    echo "  and the opening of a stream); the lease keep-alive messages on the open stream (every lease_ttl / 3 = 5 s) are not requests"
    echo "  there, but etcd's \`LeaseKeepAlive\` counter shows them. The TCP figures are the kernel's \`tcp_info\` of the node's own connections to"
    echo "  the three etcd client ports (\`ss -tinp\`, filtered by the node's pid): payload = gRPC over HTTP/2 including its framing and"
    echo "  HTTP/2 PINGs (the client's keep-alive: every 5 s, [cluster] timeout), no TCP/IP headers; \"on the wire\" adds 52 bytes per segment."
    echo "  Connections come and go, so the counters are kept per connection from \`ss\` samples every second (and at each reading):"
    echo "  a closed connection's last second may be missed, one opened and closed between two samples is missed."
    echo "- etcd's counters are server-side, summed over the 3 members and divided by the number of nodes; they include the one \`etcdctl put\`"
    echo "  of the triggered check (1 \`Put\` message in \"one check\", for the whole fleet)."
    echo
    echo "## Extra RSS in cluster mode"
    echo
    echo "node-1's config with and without its \`[cluster]\` table (everything else equal: one certificate, installed and not due, metrics,"
    echo "HTTP-01 listen), each a fresh \`regcert run\`, alternated $RSS_REPS times; VmRSS etc. from \`/proc/PID/status\`."
    echo
    rss_table
    echo
    echo "Without \`[cluster]\` the first check asks the CA for the certificate's renewal window (Pebble's log shows its \`GET /dir\`),"
    echo "which builds an HTTPS client; a fleet node whose certificate is not due reads etcd instead and never calls the CA. So the"
    echo "difference is the etcd client (gRPC/HTTP/2 channels, the watch, the lease keep-alive) minus that HTTPS client, after one check."
    echo "The fleet nodes that ordered, installed, reloaded and verified (HTTPS to Pebble and their registry) show the size after real work."
    echo "RssAnon (heap, stacks: what the process allocated) is the steady part of the comparison; RssFile is the binary's own pages in"
    echo "memory, which varies with the code that happened to run (and with the page cache), by about a megabyte between runs here."
} >"$W/results.md"

cp "$W/results.md" "$BENCH/fleet-results.md"
cat "$W/results.md"
log "written to bench/fleet-results.md"
