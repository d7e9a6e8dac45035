#!/usr/bin/env bash
# Daemon footprint benchmark: what an idle `regcert run` costs the registry host.
#
#   bench/daemon.sh          # builds regcert, runs (~4-5 min on 2 cores), prints a markdown table
#                            # and writes it to bench/daemon-results.md
#
# Measured, against a local Pebble (loopback only) and locally signed certificates:
#   1. idle RSS (VmRSS, VmHWM from /proc/PID/status) with 20 and with 500 certificates, read
#      SETTLE seconds after the daemon's first check finished (log line "N certificates: …");
#   2. CPU time (utime+stime, /proc/PID/stat) over IDLE_SECS of idleness with the default schedule
#      (check = "0 */10 * * * *") and over FAST_SECS with one check every 10 s, extrapolated
#      linearly to one hour;
#   3. the time of one scheduled check when nothing is due (the daemon's own `took_ms=` for
#      every check), 500 certificates, check = "*/2 * * * * *": the median of CHECKS checks after
#      the first one, with Pebble stopped after the first check; during these checks the
#      daemon's inet sockets are sampled and its network syscalls traced (strace, afterwards).
#
# 500 installed certificates without 500 issuances: one root CA → one intermediate → 500 ECDSA
# P-256 leaves (SAN cN.bench.example.com, 90 days), each installed as domain.crt (leaf +
# intermediate) and domain.key (0600). regcert decides "due" from these files, so none is due.
#
# Knobs: IDLE_SECS (60), FAST_SECS (60), CHECKS (10), SETTLE (5), KEEP=1 keeps the scratch dir.
set -euo pipefail
export LC_ALL=C

# shellcheck source=SCRIPTDIR/../scripts/lib/pebble.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/pebble.sh"
# shellcheck disable=SC2034
LOG_TAG=daemon-bench # the tag of log() lines
IDLE_SECS=${IDLE_SECS:-60}
FAST_SECS=${FAST_SECS:-60}
CHECKS=${CHECKS:-10}
SETTLE=${SETTLE:-5}
N_SMALL=20
N_BIG=500
CLK_TCK=$(getconf CLK_TCK)
DEFAULT_CHECK="0 */10 * * * *"

for tool in pebble openssl python3 curl ss awk; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install pebble openssl python3 curl iproute2)"
done

# ---------------------------------------------------------------------------------------------
# 1. Build, private copy of the binary, scratch directory
# ---------------------------------------------------------------------------------------------
scratch_dir W /tmp/regcert-daemon-bench.XXXXXX # removed at exit unless KEEP=1 or a failure
build_regcert 3 "$W/regcert"
((GIT_DIRTY == 0)) || GIT_REV+=" (+ uncommitted changes in src/ or Cargo.*)"

# ---------------------------------------------------------------------------------------------
# 2. Pebble (only for the first checks: account creation and the ARI question)
# ---------------------------------------------------------------------------------------------
free_ports ACME MGMT HTTP TLS
# shellcheck disable=SC2153 # set by free_ports
start_pebble "$W" "$ACME" "$MGMT" "$HTTP" "$TLS" - - 0 || die "pebble did not start (see $W/pebble.log)"
curl -sf --cacert "$PEBBLE_ROOT" "$PEBBLE_URL" >"$W/pebble-dir.json" || die "pebble did not start (see $W/pebble.log)"
if grep -q renewalInfo "$W/pebble-dir.json"; then PEBBLE_ARI=yes; else PEBBLE_ARI=no; fi
PEBBLE_VERSION=$(dpkg-query -W -f '${Version}' pebble 2>/dev/null || echo unknown)

# ---------------------------------------------------------------------------------------------
# 3. 500 installed certificates: root → intermediate → leaves, signed locally
# ---------------------------------------------------------------------------------------------
GEN_START=$EPOCHREALTIME
if "$PY" -c 'import cryptography' 2>/dev/null; then
    GEN_TOOL="python3 cryptography $("$PY" -c 'import cryptography; print(cryptography.__version__)'), one key per leaf"
    "$PY" "$BENCH/make_certificates.py" "$W/install" "$N_BIG"
else
    GEN_TOOL="openssl in a loop, one key shared by all leaves"
    I=$W/install
    mkdir -p "$I"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj "/CN=regcert bench root" \
        -addext basicConstraints=critical,CA:TRUE,pathlen:1 -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout "$I/root.key" -out "$I/root.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=regcert bench intermediate" \
        -keyout "$I/int.key" -out "$I/int.csr" 2>/dev/null
    openssl x509 -req -in "$I/int.csr" -CA "$I/root.pem" -CAkey "$I/root.key" -CAcreateserial -days 365 \
        -extfile <(printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n') \
        -out "$I/int.pem" 2>/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$I/leaf.key" 2>/dev/null
    openssl req -new -key "$I/leaf.key" -subj "/CN=bench" -out "$I/leaf.csr" 2>/dev/null
    for ((i = 1; i <= N_BIG; i++)); do
        mkdir -p "$I/c$i"
        openssl x509 -req -in "$I/leaf.csr" -CA "$I/int.pem" -CAkey "$I/int.key" -set_serial "$((100000 + i))" -days 90 \
            -extfile <(printf 'subjectAltName=DNS:c%d.bench.example.com\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n' "$i") \
            -out "$I/c$i/leaf.pem" 2>/dev/null
        cat "$I/c$i/leaf.pem" "$I/int.pem" >"$I/c$i/domain.crt"
        rm "$I/c$i/leaf.pem"
        install -m 0600 "$I/leaf.key" "$I/c$i/domain.key"
    done
fi
GEN_MS=$(elapsed_s "$GEN_START" | awk '{ printf "%.0f", $1 * 1000 }')
log "$N_BIG certificates generated in $GEN_MS ms ($GEN_TOOL)"

# config FILE N CHECK STATE_DIR DIRECTORY_URL
config() {
    local file=$1 n=$2 check=$3 state=$4 dir=$5 i
    {
        printf 'state_dir = "%s"\n' "$state"
        acme_toml "$dir" "$PEBBLE_ROOT" bench@example.com
        printf '\n[daemon]\ncheck = "%s"\n' "$check"
        for ((i = 1; i <= n; i++)); do cert_toml "c$i" "c$i.bench.example.com" "$W/install/c$i"; done
    } >"$file"
}
config "$W/check.toml" "$N_BIG" "$DEFAULT_CHECK" "$W/state-check" "$PEBBLE_URL"
"$REGCERT" --config "$W/check.toml" check-config >"$W/check-config.txt" 2>&1 || die "regcert check-config rejects the generated config (see $W/check-config.txt)"

# ---------------------------------------------------------------------------------------------
# 4. Helpers around one daemon (start_daemon, stop_daemon, check_lines: scripts/lib/common.sh)
# ---------------------------------------------------------------------------------------------
checks_done() { check_lines | grep -c . || true; }
took_ms() { check_lines | sed -n 's/.*took_ms=\([0-9]*\).*/\1/p'; } # one per check, in order
wait_checks() { # wait_checks COUNT TIMEOUT_S
    local deadline=$((SECONDS + $2))
    while (($(checks_done) < $1)); do
        kill -0 "$DPID" 2>/dev/null || die "regcert run exited early: $(tail -n 5 "$DLOG")"
        ((SECONDS < deadline)) || die "no $1 finished checks within $2 s (log: $DLOG)"
        sleep 0.05
    done
}
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$DPID/status"; }
cpu_ticks() { sed 's/.*) //' "/proc/$DPID/stat" | awk '{ print $12 + $13 }'; }   # utime + stime
sched_ns() { cat /proc/"$DPID"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'; }
ctx_switches() { cat /proc/"$DPID"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
failed_or_warned() { plain | grep -cE ' (WARN|ERROR) |[1-9][0-9]* failed' || true; }

# idle_window SECONDS -> sets W_TICKS W_SCHED_NS W_CTX W_CHECKS W_THREADS
idle_window() {
    local secs=$1 t0 s0 c0 n0 th0
    t0=$(cpu_ticks) s0=$(sched_ns) c0=$(ctx_switches) n0=$(checks_done) th0=$(status_kb Threads)
    sleep "$secs"
    W_TICKS=$(($(cpu_ticks) - t0))
    W_SCHED_NS=$(($(sched_ns) - s0))
    W_CTX=$(($(ctx_switches) - c0))
    W_CHECKS=$(($(checks_done) - n0))
    W_THREADS="$th0→$(status_kb Threads)"
}
per_hour() { # per_hour TICKS SECS -> "X s/h" (linear: × 3600/SECS)
    awk -v t="$1" -v s="$2" -v hz="$CLK_TCK" 'BEGIN {
        if (t == 0) printf "< %.2f s/h (0 ticks; 1 tick = %d ms)", 3600 / s / hz, 1000 / hz
        else printf "%.2f s/h", t / hz * 3600 / s }'
}
ns_per_hour() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.3f s/h", n / 1e9 * 3600 / s }'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v < t) ? "met" : "**not met**" }'; }

declare -A R

# rss_run N NAME: fresh state, Pebble up, default schedule; first check, RSS, idle CPU
rss_run() {
    local n=$1 key=$2
    config "$W/$key.toml" "$n" "$DEFAULT_CHECK" "$W/state-$key" "$PEBBLE_URL"
    log "$key: $n certificates, default schedule, fresh state, Pebble reachable"
    start_daemon "$W/$key.toml" "$W/$key.log"
    wait_checks 1 120
    R[$key.first_ms]=$(took_ms | head -n 1)
    check_lines | head -n 1 | grep -q "$n certificates: 0 renewed, 0 failed, 0 backing off" ||
        die "$key: the first check did not find all $n certificates not due: $(check_lines | head -n 1)"
    sleep "$SETTLE"
    R[$key.rss]=$(status_kb VmRSS) R[$key.hwm]=$(status_kb VmHWM) R[$key.threads]=$(status_kb Threads)
    R[$key.anon]=$(status_kb RssAnon) R[$key.file]=$(status_kb RssFile)
    R[$key.start_cpu]=$(cpu_ticks)
    R[$key.sockets]=$(ss -tunap 2>/dev/null | grep -c "pid=$DPID," || true)
    log "$key: first check ${R[$key.first_ms]} ms; VmRSS ${R[$key.rss]} kB, VmHWM ${R[$key.hwm]} kB; idle for $IDLE_SECS s"
    idle_window "$IDLE_SECS"
    R[$key.idle_ticks]=$W_TICKS R[$key.idle_ns]=$W_SCHED_NS R[$key.idle_ctx]=$W_CTX
    R[$key.idle_checks]=$W_CHECKS R[$key.idle_threads]=$W_THREADS
    R[$key.rss2]=$(status_kb VmRSS) R[$key.hwm2]=$(status_kb VmHWM)
    R[$key.warn]=$(failed_or_warned)
    log "$key: idle $W_TICKS ticks, $W_SCHED_NS ns on-CPU, $W_CTX context switches, $W_CHECKS checks"
    stop_daemon
}

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MEM=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
IDLE_BEFORE=$(a=$(head -n 1 /proc/stat); sleep 2; b=$(head -n 1 /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{ t = 0; for (i = 2; i <= NF; i++) t += $i; idle[NR] = $5 + $6; tot[NR] = t }
        END { printf "%.0f%%", 100 * (idle[2] - idle[1]) / (tot[2] - tot[1]) }')
log "CPU idle before the measurements: $IDLE_BEFORE"
START=$EPOCHSECONDS
STAT_START=$(head -n 1 /proc/stat)

# ---------------------------------------------------------------------------------------------
# 5. Scenarios
# ---------------------------------------------------------------------------------------------
# A/B. RSS and idle CPU, default schedule, 20 and 500 certificates
rss_run "$N_SMALL" small
rss_run "$N_BIG" big

# C. one check every 10 s, 500 certificates, state of B (the CA's "no ARI" is remembered: offline)
config "$W/fast.toml" "$N_BIG" "*/10 * * * * *" "$W/state-big" "$PEBBLE_URL"
log "fast: $N_BIG certificates, check every 10 s, restart on the state of the previous run"
start_daemon "$W/fast.toml" "$W/fast.log"
wait_checks 1 120
R[fast.first_ms]=$(took_ms | head -n 1)
sleep "$SETTLE"
idle_window "$FAST_SECS"
R[fast.ticks]=$W_TICKS R[fast.ns]=$W_SCHED_NS R[fast.ctx]=$W_CTX R[fast.checks]=$W_CHECKS R[fast.threads]=$W_THREADS
R[fast.rss]=$(status_kb VmRSS) R[fast.hwm]=$(status_kb VmHWM)
R[fast.took]=$(took_ms | tail -n +2 | sort -n | awk '{ a[NR] = $1 } END { if (NR) printf "%d (%d–%d, n=%d)", a[int((NR + 1) / 2)], a[1], a[NR], NR }')
R[fast.warn]=$(failed_or_warned)
log "fast: $W_TICKS ticks over $FAST_SECS s with $W_CHECKS checks"
stop_daemon

# D. check every 2 s, 500 certificates, fresh state; Pebble stopped after the first check
config "$W/every2.toml" "$N_BIG" "*/2 * * * * *" "$W/state-every2" "$PEBBLE_URL"
log "every2: $N_BIG certificates, check every 2 s, fresh state; Pebble is stopped after the first check"
start_daemon "$W/every2.toml" "$W/every2.log"
wait_checks 1 120
R[every2.first_ms]=$(took_ms | head -n 1)
kill "$PEBBLE_PID"
wait "$PEBBLE_PID" 2>/dev/null || true
curl -s --max-time 2 --cacert "$PEBBLE_ROOT" "$PEBBLE_URL" >/dev/null && die "Pebble still answers"
log "every2: Pebble stopped; collecting $CHECKS checks"
AFTER_FIRST=$(checks_done)
NS0=$(sched_ns) T0=$EPOCHREALTIME
# Sample the daemon's inet sockets (TCP/UDP, any state) while the checks run.
SOCK_SAMPLES=0 SOCK_SEEN=0
deadline=$((SECONDS + 2 * CHECKS + 30))
while (($(checks_done) < AFTER_FIRST + CHECKS)); do
    kill -0 "$DPID" 2>/dev/null || die "regcert run exited early: $(tail -n 5 "$DLOG")"
    ((SECONDS < deadline)) || die "no $CHECKS further checks within $((2 * CHECKS + 30)) s (log: $DLOG)"
    s=$(ss -tuanp 2>/dev/null | grep -c "pid=$DPID," || true)
    SOCK_SAMPLES=$((SOCK_SAMPLES + 1)) SOCK_SEEN=$((SOCK_SEEN + s))
    sleep 0.1
done
NS1=$(sched_ns) T1=$EPOCHREALTIME
TOOK_ALL=$(took_ms)
# on-CPU per check: run time of the window minus the idle rate measured in B, ÷ checks
R[every2.cpu_per_check]=$(awk -v a="$NS0" -v b="$NS1" -v t0="$T0" -v t1="$T1" -v in_="${R[big.idle_ns]}" -v is="$IDLE_SECS" -v c="$(($(checks_done) - AFTER_FIRST))" \
    'BEGIN { printf "%.1f ms", (b - a - in_ / is * (t1 - t0)) / c / 1e6 }')
R[every2.took]=$(echo "$TOOK_ALL" | tail -n +2 | head -n "$CHECKS" | sort -n |
    awk '{ a[NR] = $1 } END { printf "%d", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
R[every2.range]=$(echo "$TOOK_ALL" | tail -n +2 | head -n "$CHECKS" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%d–%d", lo, hi }')
R[every2.list]=$(echo "$TOOK_ALL" | tail -n +2 | head -n "$CHECKS" | paste -sd' ')
R[every2.checklines]=$(check_lines | tail -n +2 | head -n "$CHECKS" | sed -E 's/.* ([0-9]+ certificates: .*[^ ]) +took_ms.*/\1/' | sort | uniq -c | sed 's/^ *//')
R[every2.warn]=$(plain | awk '/[0-9]+ certificates: / { seen = 1; next } seen && / (WARN|ERROR) / { c++ } END { print c + 0 }')
# Then trace the network syscalls of all threads over 3 more checks (strace slows every syscall,
# so this comes after the timed checks and its checks are not timed).
STRACE=no
if command -v strace >/dev/null; then
    n0=$(checks_done)
    timeout -s INT 7 strace -f -qq -p "$DPID" -e trace=%network -o "$W/every2.strace" 2>"$W/every2.strace.err" || true
    R[every2.strace_checks]=$(($(checks_done) - n0))
    R[every2.strace_calls]=$(grep -c . "$W/every2.strace" 2>/dev/null || true)
    STRACE=yes
fi
R[every2.rss]=$(status_kb VmRSS) R[every2.hwm]=$(status_kb VmHWM)
stop_daemon

# E. first check when the CA cannot be reached at all (fresh state, connection refused)
config "$W/offline.toml" "$N_BIG" "$DEFAULT_CHECK" "$W/state-offline" "$PEBBLE_URL"
log "offline: $N_BIG certificates, fresh state, CA unreachable (Pebble stopped)"
start_daemon "$W/offline.toml" "$W/offline.log"
wait_checks 1 300
R[offline.first_ms]=$(took_ms | head -n 1)
R[offline.warn]=$(plain | grep -c 'cannot fetch the renewal window' || true)
R[offline.summary]=$(check_lines | head -n 1 | sed -E 's/.* ([0-9]+ certificates: .*[^ ]) +took_ms.*/\1/')
sleep 1
stop_daemon
ELAPSED=$((EPOCHSECONDS - START))
IDLE_DURING=$(printf '%s\n%s\n' "$STAT_START" "$(head -n 1 /proc/stat)" | awk '{ t = 0; for (i = 2; i <= NF; i++) t += $i; idle[NR] = $5 + $6; tot[NR] = t }
    END { printf "%.0f%%", 100 * (idle[2] - idle[1]) / (tot[2] - tot[1]) }')

# ---------------------------------------------------------------------------------------------
# 6. Report
# ---------------------------------------------------------------------------------------------
rss_cell() { printf '%s (%s kB); peak VmHWM %s; %s thread(s)' "$(mib "$1")" "$1" "$(mib "$2")" "$3"; }
idle_row() { # idle_row KEY N
    local k=$1 n=$2 note=
    ((R[$k.idle_checks] == 0)) || note=" — ⚠ ${R[$k.idle_checks]} scheduled check(s) fell into the window"
    printf '| CPU per idle hour, %d certificates, default schedule (over %d s × %d)%s | on-CPU **%s**; utime+stime %s (%d ticks) | < 1 s/h | %s |\n' \
        "$n" "$IDLE_SECS" "$((3600 / IDLE_SECS))" "$note" "$(ns_per_hour "${R[$k.idle_ns]}" "$IDLE_SECS")" \
        "$(per_hour "${R[$k.idle_ticks]}" "$IDLE_SECS")" "${R[$k.idle_ticks]}" \
        "$(verdict "$(awk -v n="${R[$k.idle_ns]}" -v s="$IDLE_SECS" 'BEGIN { print n / 1e9 * 3600 / s }')" 1)"
}
FAST_PER_CHECK=$(awk -v t="${R[fast.ticks]}" -v it="${R[big.idle_ticks]}" -v c="${R[fast.checks]}" -v s="$FAST_SECS" -v is="$IDLE_SECS" -v hz="$CLK_TCK" \
    'BEGIN { if (c) printf "%.1f ms", (t - it * s / is) / c / hz * 1000; else printf "—" }')
FAST_NS_PER_CHECK=$(awk -v t="${R[fast.ns]}" -v it="${R[big.idle_ns]}" -v c="${R[fast.checks]}" -v s="$FAST_SECS" -v is="$IDLE_SECS" \
    'BEGIN { if (c) printf "%.1f ms", (t - it * s / is) / c / 1e6; else printf "—" }')
DEFAULT_HOUR=$(awk -v it="${R[big.idle_ns]}" -v is="$IDLE_SECS" -v f="${R[fast.ns]}" -v fs="$FAST_SECS" -v c="${R[fast.checks]}" \
    'BEGIN { idle = it / is * 3600; per = c ? (f - it * fs / is) / c : 0; printf "%.3f s/h", (idle + 6 * per) / 1e9 }')

{
    echo "# Daemon footprint results"
    echo
    echo "Written by \`bench/daemon.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (measurements took ${ELAPSED} s)."
    echo
    echo "- machine: $(uname -srm), $(nproc) CPUs ($CPU_MODEL), $MEM RAM, $(. /etc/os-release && echo "$PRETTY_NAME"); CPU idle before: $IDLE_BEFORE, during the measurements: $IDLE_DURING (other work on the machine inflates wall times such as \`took_ms\`); load after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- regcert: $REGCERT_VERSION, commit $GIT_REV (release build, private copy of the binary)"
    echo "- Pebble $PEBBLE_VERSION on 127.0.0.1 (\`PEBBLE_WFE_NONCEREJECT=0\`; renewalInfo (ARI) in its directory: $PEBBLE_ARI), used only by the first checks"
    echo "- $N_BIG installed certificates signed locally (root → intermediate → ECDSA P-256 leaf, 90 days; fullchain = leaf + intermediate; $GEN_TOOL; $GEN_MS ms); none is due"
    echo "- RSS read from \`/proc/PID/status\` ${SETTLE} s after the first check finished; CPU = utime+stime from \`/proc/PID/stat\` (1 tick = $((1000 / CLK_TCK)) ms); \"on-CPU\" = sum of \`/proc/PID/task/*/schedstat\` run time (ns resolution, live threads only)"
    echo
    echo "| measurement | value | target | |"
    echo "|---|---|---|---|"
    echo "| Idle RSS, $N_SMALL certificates (VmRSS) | $(rss_cell "${R[small.rss]}" "${R[small.hwm]}" "${R[small.threads]}") | < 15 MB | $(verdict "${R[small.rss]}" $((15000000 / 1024))) |"
    echo "| Idle RSS, $N_BIG certificates (VmRSS) | $(rss_cell "${R[big.rss]}" "${R[big.hwm]}" "${R[big.threads]}") | < 40 MB | $(verdict "${R[big.rss]}" $((40000000 / 1024))) |"
    echo "| … RSS breakdown, $N_BIG certificates (RssAnon / RssFile) | $(mib "${R[big.anon]}") / $(mib "${R[big.file]}") | | |"
    echo "| … VmRSS after a further ${IDLE_SECS} s idle ($N_SMALL / $N_BIG certificates) | $(mib "${R[small.rss2]}") / $(mib "${R[big.rss2]}") | | |"
    echo "| … VmRSS after ${R[fast.checks]} more checks every 10 s / after $CHECKS more checks every 2 s ($N_BIG certificates) | $(mib "${R[fast.rss]}") (peak $(mib "${R[fast.hwm]}")) / $(mib "${R[every2.rss]}") (peak $(mib "${R[every2.hwm]}")) | | |"
    idle_row small "$N_SMALL"
    idle_row big "$N_BIG"
    echo "| CPU per hour, $N_BIG certificates, **one check every 10 s** (${R[fast.checks]} checks in the $FAST_SECS s window × $((3600 / FAST_SECS)) = $((${R[fast.checks]} * 3600 / FAST_SECS)) checks/h) | on-CPU $(ns_per_hour "${R[fast.ns]}" "$FAST_SECS"); utime+stime $(per_hour "${R[fast.ticks]}" "$FAST_SECS") (${R[fast.ticks]} ticks) | (< 1 s/h idle) | |"
    echo "| … CPU per check, $N_BIG certificates (window minus idle baseline, ÷ checks: ticks / on-CPU) | $FAST_PER_CHECK / $FAST_NS_PER_CHECK | | |"
    echo "| … so with the default schedule (6 checks/h) and $N_BIG certificates: idle + 6 checks (on-CPU) | $DEFAULT_HOUR | < 1 s/h | $(verdict "${DEFAULT_HOUR% s/h}" 1) |"
    echo "| Wake-ups while idle (context switches/s, all threads; $N_SMALL / $N_BIG certificates) | $(awk -v a="${R[small.idle_ctx]}" -v b="${R[big.idle_ctx]}" -v s="$IDLE_SECS" 'BEGIN { printf "%.1f / %.1f", a / s, b / s }') | | |"
    echo "| Threads during the idle windows ($N_SMALL / $N_BIG) | ${R[small.idle_threads]} / ${R[big.idle_threads]} | | |"
    echo "| **Scheduled check, nothing due, $N_BIG certificates, CA stopped** (\`took_ms\`, wall time, median of $CHECKS checks after the first, every 2 s) | **${R[every2.took]} ms** (${R[every2.range]} ms) | < 10 ms | $(verdict "${R[every2.took]}" 10) |"
    echo "| … on-CPU time per check (the same $CHECKS checks; window minus the idle rate, ÷ checks) | ${R[every2.cpu_per_check]} | | |"
    echo "| … the same, checks every 10 s (median, min–max, of the checks after the start-up one) | ${R[fast.took]} ms | | |"
    echo "| … results of those $CHECKS checks | ${R[every2.checklines]//$'\n'/; }; WARN/ERROR lines after the first check: ${R[every2.warn]} | 0 failed | |"
    echo "| … network during those checks | inet sockets of the daemon in $SOCK_SAMPLES \`ss\` samples: $SOCK_SEEN; $( [[ $STRACE == yes ]] && echo "strace \`%network\` syscalls over ${R[every2.strace_checks]} further checks: ${R[every2.strace_calls]}" || echo "strace not installed") | none | |"
    echo "| First check, $N_SMALL certificates, fresh state, Pebble reachable (account creation; Pebble has no ARI) | ${R[small.first_ms]} ms | | |"
    echo "| First check, $N_BIG certificates, fresh state, Pebble reachable (two runs) | ${R[big.first_ms]} ms / ${R[every2.first_ms]} ms | | |"
    echo "| First check after a restart, $N_BIG certificates, state kept (\"no ARI\" remembered for a day) | ${R[fast.first_ms]} ms | | |"
    echo "| First check, $N_BIG certificates, fresh state, **CA unreachable** (connection refused) | ${R[offline.first_ms]} ms — \`${R[offline.summary]}\`, ${R[offline.warn]} \"cannot fetch the renewal window\" warnings | | |"
    echo "| Startup + first check CPU ($N_SMALL / $N_BIG certificates, utime+stime until the RSS reading) | $(awk -v a="${R[small.start_cpu]}" -v b="${R[big.start_cpu]}" -v hz="$CLK_TCK" 'BEGIN { printf "%d ms / %d ms", a * 1000 / hz, b * 1000 / hz }') | | |"
    echo
    echo "Extrapolation: CPU per hour = CPU measured in the window × (3600 s / window length), i.e. it"
    echo "assumes the window is representative of the hour. With the default schedule the daemon checks"
    echo "at minutes :00, :10, …; a window without a check measures pure idleness, and the row \"idle +"
    echo "6 checks\" adds six checks at the per-check cost measured with one check every 10 s. When a"
    echo "window shows 0 ticks, the value is an upper bound (less than one 10 ms tick in the window)."
    echo "The verdicts use the on-CPU time (schedstat, nanoseconds): utime+stime advance in whole 10 ms"
    echo "ticks, so at ~1 s/h (≈ 17 ms per minute) they are quantised to ±0.6 s/h in a 60 s window."
    echo
    echo "Every took_ms of the 2-second run (first = with Pebble): $(echo "$TOOK_ALL" | paste -sd' ')"
} >"$W/results.md"

cp "$W/results.md" "$BENCH/daemon-results.md"
cat "$W/results.md"
log "written to bench/daemon-results.md"
