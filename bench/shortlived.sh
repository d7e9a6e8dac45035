#!/usr/bin/env bash
# What a 6-day certificate costs under the service: `regcert run` against Pebble 2.10 with its
# `shortlived` profile (validityPeriod 518400 s, Let's Encrypt's 160-hour profile rounded to 6 d).
#
#   bench/shortlived.sh      # builds regcert, runs (~1-2 min on 2 cores), prints a markdown table
#                            # and writes it to bench/shortlived-results.md
#
# regcert has no faked clock, so a week is not simulated; it is computed from two measurements of
# the daemon process (utime+stime from /proc/PID/stat, and on-CPU ns from schedstat):
#   1. CPU per renewal: the daemon with renew_before = "7d" (longer than the lifetime, so every
#      check renews: order, HTTP-01, finalize, download, install, the ARI question afterwards),
#      one check every 3 s, over RENEWALS renewals after the first check;
#   2. CPU per idle check: the default policy (nothing due), one check every 2 s, over
#      IDLE_CHECKS checks after the first.
# Renewals per week follow from the policy (renewal when a third of the lifetime is left: every
# 4 days for 6-day certificates); checks per week from the default schedule (every 10 minutes).
#
# Knobs: RENEWALS (8), IDLE_CHECKS (30), KEEP=1 keeps the scratch dir, REGCERT_PEBBLE_2_10=DIR.
set -euo pipefail
export LC_ALL=C

# shellcheck source=SCRIPTDIR/../scripts/lib/pebble.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/pebble.sh"
# shellcheck disable=SC2034
LOG_TAG=shortlived-bench
RENEWALS=${RENEWALS:-8}
IDLE_CHECKS=${IDLE_CHECKS:-30}
PEBBLE_210=${REGCERT_PEBBLE_2_10:-/var/cache/regcert-test/pebble210/x/usr/bin}
CLK_TCK=$(getconf CLK_TCK)
LIFETIME=518400
CHECKS_PER_WEEK=1008 # the default [daemon] check = "0 */10 * * * *"

[[ -x $PEBBLE_210/pebble ]] || die "Pebble 2.10 is not in $PEBBLE_210: run scripts/install-deps.sh (or set REGCERT_PEBBLE_2_10)"
command -v pebble-challtestsrv >/dev/null || die "pebble-challtestsrv is missing (Debian: apt-get install pebble)"

scratch_dir W /tmp/regcert-shortlived-bench.XXXXXX # removed at exit unless KEEP=1 or a failure
build_regcert 3 "$W/regcert"
((GIT_DIRTY == 0)) || GIT_REV+=" (+ uncommitted changes in src/ or Cargo.*)"

free_ports ACME MGMT HTTP TLS DNS DNSMGMT
# shellcheck disable=SC2153 # set by free_ports
PEBBLE_BIN=$PEBBLE_210/pebble PEBBLE_PROFILES="{\"default\": {\"description\": \"90 days\", \"validityPeriod\": 7776000}, \"shortlived\": {\"description\": \"6 days\", \"validityPeriod\": $LIFETIME}}" \
    start_pebble "$W" "$ACME" "$MGMT" "$HTTP" "$TLS" "$DNS" "$DNSMGMT" 5 || die "pebble did not start (see $W/pebble.log)"
PEBBLE_VERSION=$(find "$PEBBLE_210/../../.." -maxdepth 1 -name 'pebble_*.deb' -printf '%f\n' 2>/dev/null | head -n 1)

mkdir -p "$W/install"

# config FILE CHECK [RENEW_BEFORE]
config() {
    {
        printf 'state_dir = "%s"\n' "$W/state"
        acme_toml "$PEBBLE_URL" "$PEBBLE_ROOT" bench@example.com
        printf 'profile = "shortlived"\n\n[http01]\nlisten = "127.0.0.1:%s"\n' "$HTTP"
        printf '\n[daemon]\ncheck = "%s"\n' "$2"
        # renew_before goes into [[certificate]], before cert_toml's [certificate.install].
        cert_toml short short.bench.example.com "$W/install" | awk -v rb="${3:-}" '{ print } /^key = / && rb != "" && !done { printf "renew_before = \"%s\"\n", rb; done = 1 }'
    } >"$1"
    "$REGCERT" --config "$1" check-config >"$1.check" 2>&1 || die "regcert check-config rejects $1 (see $1.check)"
}

count() { check_lines | grep -c "$1" || true; }
wait_count() { # wait_count PATTERN N TIMEOUT_S
    local deadline=$((SECONDS + $3))
    while (($(count "$1") < $2)); do
        kill -0 "$DPID" 2>/dev/null || die "regcert run exited early: $(tail -n 5 "$DLOG")"
        ((SECONDS < deadline)) || die "no $2 checks matching '$1' within $3 s (log: $DLOG)"
        sleep 0.05
    done
}
cpu_ticks() { sed 's/.*) //' "/proc/$DPID/stat" | awk '{ print $12 + $13 }'; } # utime + stime, dead threads included
sched_ns() { cat /proc/"$DPID"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'; }
ms() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", t * 1000 / hz / n }'; }
ns_ms() { awk -v t="$1" -v n="$2" 'BEGIN { printf "%.2f", t / 1e6 / n }'; }

# 1. CPU per renewal (every check renews).
config "$W/renew.toml" "*/3 * * * * *" 7d
start_daemon "$W/renew.toml" "$W/renew.log"
wait_count " 1 renewed, 0 failed" 1 120 # the first issuance also creates the account
T0=$(cpu_ticks)
N0=$(count " 1 renewed")
F0=$(count " 1 failed")
wait_count " 1 renewed" $((N0 + RENEWALS)) $((RENEWALS * 30))
T1=$(cpu_ticks)
FAILED=$(($(count " 1 failed") - F0))
stop_daemon
LIFE_SEEN=$(openssl x509 -noout -startdate -enddate -dateopt iso_8601 -in "$W/install/domain.crt" |
    awk -F= '{ print $2 }' | xargs -I{} date -d {} +%s | paste -sd' ' | awk '{ print $2 - $1 }')
((LIFE_SEEN >= LIFETIME - 1 && LIFE_SEEN <= LIFETIME)) || die "the installed certificate lives $LIFE_SEEN s, not $LIFETIME s (profile shortlived)"
RENEW_TICKS=$((T1 - T0))
RENEW_MS=$(ms "$RENEW_TICKS" "$RENEWALS")
log "renewal: $RENEW_MS ms CPU each ($RENEW_TICKS ticks over $RENEWALS renewals, $FAILED failed attempts in between)"

# 2. CPU per idle check (the default policy: the certificate just issued is not due).
config "$W/idle.toml" "*/2 * * * * *"
start_daemon "$W/idle.toml" "$W/idle.log"
wait_count " 0 renewed, 0 failed" 1 60
T0=$(cpu_ticks)
S0=$(sched_ns)
wait_count " 0 renewed, 0 failed" $((IDLE_CHECKS + 1)) $((IDLE_CHECKS * 3 + 30))
T1=$(cpu_ticks)
S1=$(sched_ns)
[[ $(count " 1 renewed") == 0 ]] || die "an idle check renewed (log: $DLOG)"
stop_daemon
IDLE_TICKS=$((T1 - T0))
IDLE_NS=$((S1 - S0))
IDLE_MS=$(ns_ms "$IDLE_NS" "$IDLE_CHECKS")
log "idle check: $IDLE_MS ms on-CPU each ($IDLE_TICKS ticks over $IDLE_CHECKS checks)"

# 3. Per week.
read -r PER_WEEK WEEK_RENEW WEEK_IDLE WEEK_TOTAL < <(awk -v life="$LIFETIME" -v r="$RENEW_MS" -v i="$IDLE_MS" -v c="$CHECKS_PER_WEEK" 'BEGIN {
    per_week = 7 * 86400 / (life * 2 / 3)
    printf "%.2f %.0f %.0f %.0f\n", per_week, per_week * r, c * i, per_week * r + c * i }')

{
    echo "# A 6-day certificate under \`regcert run\`"
    echo
    echo "Produced by \`bench/shortlived.sh\` on $(date -u +%Y-%m-%d): $REGCERT_VERSION ($GIT_REV), Pebble 2.10 (${PEBBLE_VERSION:-$PEBBLE_210}) with profile \`shortlived\` (${LIFETIME} s = 6 days; the installed certificate lives $LIFE_SEEN s: notAfter is inclusive), 5% badNonce, HTTP-01, ECDSA P-256, loopback only."
    echo "Machine: $(uname -srm), $(nproc) CPUs, shared with other builds (wall times are not reported; CPU time is)."
    echo
    echo "| what | figure | how |"
    echo "|---|---|---|"
    echo "| renewals per week | **$PER_WEEK** | the policy: renew when a third of the lifetime is left, i.e. every 4 of 6 days (7 d / 4 d); a CA's ARI window can move it |"
    echo "| CPU per renewal | **$RENEW_MS ms** | utime+stime of the daemon over $RENEWALS renewals ($RENEW_TICKS ticks of $((1000 / CLK_TCK)) ms; order, HTTP-01, finalize, download, install, ARI; $FAILED failed attempts in between) |"
    echo "| CPU per idle check | **$IDLE_MS ms** | on-CPU time (schedstat) over $IDLE_CHECKS checks with nothing due ($IDLE_TICKS ticks) |"
    echo "| CPU per week: renewals | $WEEK_RENEW ms | $PER_WEEK × $RENEW_MS ms |"
    echo "| CPU per week: checks | $WEEK_IDLE ms | $CHECKS_PER_WEEK checks (default \`check\`, every 10 min) × $IDLE_MS ms |"
    echo "| **CPU per week, one 6-day certificate** | **$WEEK_TOTAL ms** | between checks the daemon sleeps (no timer ticks) |"
} >"$W/table.md"
cat "$W/table.md"
cp "$W/table.md" "$BENCH/shortlived-results.md"
log "wrote bench/shortlived-results.md"
