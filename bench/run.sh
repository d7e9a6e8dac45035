#!/usr/bin/env bash
# Benchmark regcert against the peer ACME clients uacme, lego and certbot, all against one local
# Pebble ACME test server (loopback only). See bench/README.md for what every row measures.
#
#   bench/run.sh            # installs missing Debian packages, builds regcert, runs, writes bench/results.md
#
# Environment knobs:
#   RUNS=5          runs behind every median
#   N=20            certificates in the batch and no-op rows
#   CLIENTS="regcert uacme lego certbot"   a subset only prints its table; results.md is kept
#   NONCE_REJECT=5  percentage of valid nonces Pebble rejects with badNonce (5 = Pebble's default)
#   IDLE_WAIT=60    seconds to wait for the CPU to be >= 90% idle before measuring
#   KEEP=1          keep the scratch directory with the log of every run (always kept on failure)
set -euo pipefail
export LC_ALL=C

# shellcheck source=SCRIPTDIR/../scripts/lib/pebble.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/pebble.sh"
# shellcheck disable=SC2034
LOG_TAG=bench # the tag of log() lines
RUNS=${RUNS:-5}
N=${N:-20}
NONCE_REJECT=${NONCE_REJECT:-5}
TIMED="$BENCH/timed.sh"

# ---------------------------------------------------------------------------------------------
# 1. Dependencies (Debian packages)
# ---------------------------------------------------------------------------------------------
install_deps() {
    local missing=() pkg
    for pkg in pebble uacme lego certbot time openssl curl python3 util-linux ca-certificates; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing missing packages: ${missing[*]}"
        local sudo=()
        [[ $(id -u) == 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get update
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${missing[@]}"
    fi
}
install_deps

# ---------------------------------------------------------------------------------------------
# 2. Scratch directory (removed at exit unless KEEP=1 or a failure), regcert, ports
# ---------------------------------------------------------------------------------------------
scratch_dir W /tmp/regcert-bench.XXXXXX
# Measure a private copy: another build in this checkout must not swap the binary mid-benchmark.
build_regcert 1 "$W/regcert-bin"
# What was built, recorded now (the tree may change while the benchmark runs)
REGCERT_VER="$REGCERT_VERSION (git $GIT_REV$( ((GIT_DIRTY == 0)) || echo ', with uncommitted changes'))"
free_ports P_ACME P_MGMT P_HTTP P_TLS P_DNS P_DNSMGMT
HTTP01="127.0.0.1:$P_HTTP"

# ---------------------------------------------------------------------------------------------
# 3. Pebble (scripts/lib/pebble.sh), and challtestsrv as the DNS server (everything -> 127.0.0.1)
# ---------------------------------------------------------------------------------------------
start_pebble "$W" "$P_ACME" "$P_MGMT" "$P_HTTP" "$P_TLS" "$P_DNS" "$P_DNSMGMT" "$NONCE_REJECT" ||
    die "pebble did not start; see $W/pebble.log"
DIR_URL=$PEBBLE_URL
ROOT=$PEBBLE_ROOT
curl -sSf --cacert "$ROOT" "$DIR_URL" >/dev/null || die "pebble directory $DIR_URL not reachable"
log "pebble up: $DIR_URL (HTTP-01 validations go to $HTTP01)"

# A plain web server for the clients that answer HTTP-01 through a webroot (uacme; lego in parallel).
WEBROOT="$W/webroot"
mkdir -p "$WEBROOT/.well-known/acme-challenge"
WEB_PID=
webroot_start() {
    wait_port_free "$P_HTTP"
    "$PY" -m http.server --bind 127.0.0.1 --directory "$WEBROOT" "$P_HTTP" >>"$W/webroot.log" 2>&1 &
    WEB_PID=$!
    PIDS+=("$WEB_PID")
    wait_port "$P_HTTP" 10 "$WEB_PID" webroot || die "webroot did not listen on port $P_HTTP"
}
webroot_stop() {
    kill "$WEB_PID" 2>/dev/null || true
    wait "$WEB_PID" 2>/dev/null || true
    WEB_PID=
    wait_port_free "$P_HTTP"
}

# ---------------------------------------------------------------------------------------------
# 4. Measurement helpers.
#    RES[key]  = "wall_seconds max_rss_kb [min_wall max_wall]"
#    FAIL[key] = failed certificates of a batch, or failed (and re-run) attempts of a repeated row
# ---------------------------------------------------------------------------------------------
declare -A RES FAIL
M="$W/measure"
mkdir -p "$M"

# note_failure WHAT LOG: remember a failed client run (with its error lines) for results.md
FAILURES="$W/failures.md"
: >"$FAILURES"
note_failure() {
    local err
    err=$(grep -iE 'error|fail|badNonce|problem' "$2" | grep -v -- '-> calling handler' | tail -n 3 | tr '\n' ' ' | cut -c1-400 || true)
    [[ -n $err ]] || err=$(tail -n 1 "$2" | cut -c1-400 || true)
    log "  WARNING: $1: $err"
    printf -- '- %s: `%s`\n' "$1" "${err//\`/\'}" >>"$FAILURES"
}

# try_timed KEY CMD...: one timed run, logged to $M/KEY.log; returns CMD's exit code. The command
# in the array PREFIX (if any) runs first and must exec its arguments (uacme's namespace wrapper).
PREFIX=()
try_timed() {
    local key=$1 rc=0
    shift
    "${PREFIX[@]}" "$TIMED" "$M/$key" "$@" >"$M/$key.log" 2>&1 || rc=$?
    local w='?' r='?'
    [[ -s $M/$key ]] && read -r w r _ <"$M/$key"
    log "  $key: ${w}s, ${r} KB, exit $rc"
    return "$rc"
}

# run_timed KEY EXPECTED_RC CMD...: like try_timed, but any other exit code ends the benchmark.
run_timed() {
    local key=$1 want=$2 rc=0
    shift 2
    try_timed "$key" "$@" || rc=$?
    if [[ $rc != "$want" ]]; then
        log "FAILED: $key exited $rc (expected $want); last lines of $M/$key.log:"
        tail -n 25 "$M/$key.log" >&2
        exit 1
    fi
}

# setup_run KEY CMD...: untimed preparation (account, warm-up); up to 3 attempts, because Pebble
# rejects nonces at random and a client may give up on one.
setup_run() {
    local key=$1 a
    shift
    for a in 1 2 3; do
        try_timed "$key.$a" "$@" && return 0
        note_failure "$key attempt $a (untimed preparation; retried)" "$M/$key.$a.log"
    done
    run_timed "$key.last" 0 "$@"
}

# repeat_timed KEY CMD...: RUNS successful runs (at most 2*RUNS attempts) -> RES[KEY] is the median.
# A failed attempt is reported in FAIL[KEY] and not counted in the median. The command in the
# array BETWEEN (if any) runs, untimed, before every attempt.
BETWEEN=()
repeat_timed() {
    local key=$1 ok=0 bad=0 a=0
    shift
    while ((ok < RUNS && a < 2 * RUNS)); do
        a=$((a + 1))
        ((${#BETWEEN[@]} == 0)) || "${BETWEEN[@]}"
        if try_timed "$key.try$a" "$@"; then
            ok=$((ok + 1))
            cp "$M/$key.try$a" "$M/$key.$ok"
            cp "$M/$key.try$a.log" "$M/$key.$ok.log"
        else
            bad=$((bad + 1))
            note_failure "$key attempt $a (not counted; the run was repeated)" "$M/$key.try$a.log"
        fi
    done
    ((ok > 0)) || die "$key: every attempt failed (logs in $M)"
    RES[$key]=$(median_of "$key" "$ok")
    FAIL[$key]=$bad
}

# batch_timed KEY CMD...: one timed run of a whole batch. The batch's exit code is its number of
# failed certificates (the loops below are written that way; regcert's is corrected by the caller).
batch_timed() {
    local key=$1 rc=0
    shift
    try_timed "$key" "$@" || rc=$?
    RES[$key]=$(single_of "$key")
    FAIL[$key]=$rc
    ((rc == 0)) || note_failure "$key (exit $rc)" "$M/$key.log"
}

# median_of KEY_PREFIX COUNT: over KEY_PREFIX.1..COUNT -> "median_wall max_rss min_wall max_wall"
median_of() {
    local i
    for ((i = 1; i <= $2; i++)); do cat "$M/$1.$i"; done |
        sort -n -k1,1 | awk '{ w[NR] = $1; if ($2 > r) r = $2 }
            END { m = (NR % 2) ? w[(NR + 1) / 2] : (w[NR / 2] + w[NR / 2 + 1]) / 2
                  printf "%.6f %d %.6f %.6f\n", m, r, w[1], w[NR] }'
}
single_of() { awk '{ printf "%.6f %d\n", $1, $2 }' "$M/$1"; }

# missing DIR SUFFIX < names: the names without a DIR/<name>SUFFIX file (certificates not yet issued)
missing() {
    local n
    while read -r n; do [[ -e $1/$n$2 ]] || echo "$n"; done
}
# check_count DIR SUFFIX NAMESFILE: every name has its certificate, or the benchmark ends
check_count() {
    local m
    m=$(missing "$1" "$2" <"$3" | wc -l)
    ((m == 0)) || die "$m certificates missing under $1 (names in $3)"
}

names() { # names PREFIX -> PREFIX-01.bench.example.com ... PREFIX-NN.bench.example.com
    local i
    for ((i = 1; i <= N; i++)); do printf '%s-%02d.bench.example.com\n' "$1" "$i"; done
}

# Shell snippets for `sh -c SNIPPET sh NAMESFILE CLIENT-ARGV...`: one client process per name
# (appended as the last argument), in sequence or all at once; exit code = number of failed names.
SEQ_LOOP='l=$1; shift; f=0; while read -r n; do "$@" "$n" </dev/null || f=$((f + 1)); done <"$l"; exit $f'
PAR_LOOP='l=$1; shift; pids=""; while read -r n; do "$@" "$n" </dev/null & pids="$pids $!"; done <"$l"
    f=0; for p in $pids; do wait "$p" || f=$((f + 1)); done; exit $f'

# ---------------------------------------------------------------------------------------------
# 5. regcert
# ---------------------------------------------------------------------------------------------
bench_regcert() {
    log "regcert"
    local R="$W/regcert"
    mkdir -p "$R/state"
    # regcert_config FILE CONCURRENCY NAMESFILE (one certificate per name; "default" = no key)
    regcert_config() {
        local file=$1 conc=$2 name
        {
            printf 'state_dir = "%s"\n' "$R/state"
            [[ $conc == default ]] || printf 'concurrency = %s\n' "$conc"
            acme_toml "$DIR_URL" "$ROOT" bench@example.com "$HTTP01"
            while read -r name; do
                mkdir -p "$R/install/$name"
                cert_toml "$name" "$name" "$R/install/$name"
            done <"$3"
        } >"$file"
    }
    # regcert_failed KEY: the "N failed" count of regcert's summary line
    regcert_failed() { sed -n 's/.* \([0-9][0-9]*\) failed$/\1/p' "$M/$1.log" | tail -n 1; }
    wait_port_free "$P_HTTP"
    echo regcert-one.bench.example.com >"$R/one.names"
    regcert_config "$R/one.toml" 1 "$R/one.names"
    setup_run regcert.warmup "$REGCERT" -q --config "$R/one.toml" renew # also creates the account
    repeat_timed regcert.one "$REGCERT" -q --config "$R/one.toml" renew --force

    local v
    for v in seq par def; do names "regcert-$v" >"$R/$v.names"; done
    regcert_config "$R/seq.toml" 1 "$R/seq.names"
    regcert_config "$R/par.toml" "$N" "$R/par.names"
    regcert_config "$R/def.toml" default "$R/def.names"
    for v in seq par def; do
        batch_timed "regcert.$v" "$REGCERT" -q --config "$R/$v.toml" renew
        local f
        f=$(regcert_failed "regcert.$v")
        FAIL[regcert.$v]=${f:-${FAIL[regcert.$v]}}
        # like the next cron run would: complete what failed (untimed), so the no-op row has all N
        ((${FAIL[regcert.$v]} == 0)) || setup_run "regcert.$v.repair" "$REGCERT" -q --config "$R/$v.toml" renew
        check_count "$R/install" /domain.crt "$R/$v.names"
    done

    repeat_timed regcert.noop "$REGCERT" -q --config "$R/par.toml" renew
    grep -q "0 renewed, $N not due, 0 failed" "$M/regcert.noop.1.log" ||
        die "regcert no-op run did not report $N not due (see $M/regcert.noop.1.log)"
}

# ---------------------------------------------------------------------------------------------
# 6. uacme (HTTP-01 through Debian's stock hook script /usr/share/uacme/uacme.sh + a webroot)
# ---------------------------------------------------------------------------------------------
# uacme has no option for an extra CA and its libcurl-gnutls reads only the compiled-in bundle
# /etc/ssl/certs/ca-certificates.crt, so every uacme run happens in a private mount namespace in
# which that file is replaced by (system bundle + pebble's TLS root). Timing starts inside the
# namespace (timed.sh runs there), so the unshare/mount cost is not counted.
UACME_OK=1
bench_uacme() {
    log "uacme"
    local U="$W/uacme" hook=/usr/share/uacme/uacme.sh
    [[ -x $hook ]] || die "uacme's stock hook $hook is missing"
    mkdir -p "$U/conf"
    cat /etc/ssl/certs/ca-certificates.crt "$ROOT" >"$U/bundle.pem"
    printf '%s\n' '#!/bin/sh' \
        "# Run \"\$@\" in a private mount namespace where the system CA bundle also holds pebble's TLS root." \
        "exec unshare -m --propagation private sh -c 'mount --bind \"\$0\" /etc/ssl/certs/ca-certificates.crt && exec \"\$@\"' \"$U/bundle.pem\" \"\$@\"" \
        >"$U/ns"
    chmod +x "$U/ns"
    if ! "$U/ns" true 2>"$U/unshare.err"; then
        log "uacme skipped: cannot make it trust pebble's TLS root (unshare -m failed: $(cat "$U/unshare.err"))"
        UACME_OK=0
        return 0
    fi
    PREFIX=("$U/ns")
    export UACME_CHALLENGE_PATH="$WEBROOT/.well-known/acme-challenge"
    local base=(uacme -c "$U/conf" -a "$DIR_URL" -t EC -b 256 -h "$hook")
    webroot_start
    setup_run uacme.account "${base[@]}" -y new bench@example.com
    setup_run uacme.warmup "${base[@]}" issue uacme-one.bench.example.com
    # uacme keeps the replaced certificate as cert-<unix seconds>.pem and fails ("File exists") when
    # two re-issuances of one name finish within the same second, so let a second pass (untimed).
    BETWEEN=(sleep 1)
    repeat_timed uacme.one "${base[@]}" -f issue uacme-one.bench.example.com
    BETWEEN=()

    # N certificates, one uacme process per certificate: one after another, and all at once.
    names uacme-seq >"$U/seq.names"
    names uacme-par >"$U/par.names"
    batch_timed uacme.seq sh -c "$SEQ_LOOP" sh "$U/seq.names" "${base[@]}" issue
    batch_timed uacme.par sh -c "$PAR_LOOP" sh "$U/par.names" "${base[@]}" issue
    if ((${FAIL[uacme.par]})); then # complete the set for the no-op row (untimed)
        missing "$U/conf" /cert.pem <"$U/par.names" >"$U/repair.names"
        setup_run uacme.par.repair sh -c "$SEQ_LOOP" sh "$U/repair.names" "${base[@]}" issue
    fi
    check_count "$U/conf" /cert.pem "$U/par.names"

    # No-op: N installed certificates, none due. `uacme issue` exits 1 when it skips a certificate.
    local noop='l=$1; shift; while read -r n; do "$@" "$n" </dev/null; [ $? = 1 ] || exit 9; done <"$l"'
    repeat_timed uacme.noop sh -c "$noop" sh "$U/par.names" "${base[@]}" issue
    ((${FAIL[uacme.noop]} == 0)) || die "a uacme no-op run did not skip every certificate (see $M/uacme.noop.*)"
    PREFIX=()
    unset UACME_CHALLENGE_PATH
    webroot_stop
}

# ---------------------------------------------------------------------------------------------
# 7. lego (built-in HTTP-01 server; webroot + shared web server for the parallel batch)
# ---------------------------------------------------------------------------------------------
bench_lego() {
    log "lego"
    local L="$W/lego"
    mkdir -p "$L"
    export LEGO_CA_CERTIFICATES="$ROOT"
    local base=(lego --path "$L" --server "$DIR_URL" --accept-tos --email bench@example.com --key-type ec256)
    local http=(--http --http.port "$HTTP01")
    wait_port_free "$P_HTTP"
    setup_run lego.warmup "${base[@]}" "${http[@]}" -d lego-one.bench.example.com run # also creates the account
    repeat_timed lego.one "${base[@]}" "${http[@]}" -d lego-one.bench.example.com run

    names lego-seq >"$L/seq.names"
    names lego-par >"$L/par.names"
    # lego wants `-d NAME` before its subcommand `run`
    local seq=${SEQ_LOOP//'"$n"'/-d '"$n"' run}
    local par=${PAR_LOOP//'"$n"'/-d '"$n"' run}
    # One after another, each process with its own built-in HTTP-01 server.
    batch_timed lego.seq sh -c "$seq" sh "$L/seq.names" "${base[@]}" "${http[@]}"
    # All at once: N processes cannot share one listening port, so they write tokens to a webroot
    # that one plain web server serves (lego's documented --http.webroot mode).
    webroot_start
    batch_timed lego.par sh -c "$par" sh "$L/par.names" "${base[@]}" --http --http.webroot "$WEBROOT"
    if ((${FAIL[lego.par]})); then
        missing "$L/certificates" .crt <"$L/par.names" >"$L/repair.names"
        setup_run lego.par.repair sh -c "$seq" sh "$L/repair.names" "${base[@]}" --http --http.webroot "$WEBROOT"
    fi
    webroot_stop
    check_count "$L/certificates" .crt "$L/par.names"

    # No-op: `lego renew` per certificate; it exits 0 without renewing when more than 30 days remain.
    local noop='l=$1; shift; while read -r n; do "$@" -d "$n" renew --days 30 </dev/null || exit; done <"$l"'
    repeat_timed lego.noop sh -c "$noop" sh "$L/par.names" "${base[@]}" "${http[@]}"
    ((${FAIL[lego.noop]} == 0)) || die "a lego no-op run failed (see $M/lego.noop.*)"
    [[ $(grep -c 'no renewal' "$M/lego.noop.1.log") == "$N" ]] ||
        die "lego no-op run did not skip all $N renewals (see $M/lego.noop.1.log)"
    unset LEGO_CA_CERTIFICATES
}

# ---------------------------------------------------------------------------------------------
# 8. certbot (standalone authenticator = its built-in HTTP-01 server)
# ---------------------------------------------------------------------------------------------
bench_certbot() {
    log "certbot"
    local C="$W/certbot"
    mkdir -p "$C"
    export REQUESTS_CA_BUNDLE="$ROOT"
    # one certbot "installation" (config, work and logs dir) for the single-name row, one for the batch
    local one=(certbot -n --server "$DIR_URL" --config-dir "$C/one/config" --work-dir "$C/one/work" --logs-dir "$C/one/logs")
    local batch=(certbot -n --server "$DIR_URL" --config-dir "$C/batch/config" --work-dir "$C/batch/work" --logs-dir "$C/batch/logs")
    local issue=(certonly --standalone --http-01-address 127.0.0.1 --http-01-port "$P_HTTP"
        --key-type ecdsa --elliptic-curve secp256r1 -d)
    local reg=(register --agree-tos --register-unsafely-without-email)
    wait_port_free "$P_HTTP"
    setup_run certbot.account "${one[@]}" "${reg[@]}"
    setup_run certbot.warmup "${one[@]}" "${issue[@]}" certbot-one.bench.example.com
    repeat_timed certbot.one "${one[@]}" --force-renewal "${issue[@]}" certbot-one.bench.example.com

    # N certificates one after another (certbot locks its config/work/logs dirs, so one
    # installation cannot run in parallel).
    setup_run certbot.account2 "${batch[@]}" "${reg[@]}"
    names certbot-seq >"$C/seq.names"
    batch_timed certbot.seq sh -c "$SEQ_LOOP" sh "$C/seq.names" "${batch[@]}" "${issue[@]}"
    if ((${FAIL[certbot.seq]})); then
        missing "$C/batch/config/live" /cert.pem <"$C/seq.names" >"$C/repair.names"
        setup_run certbot.seq.repair sh -c "$SEQ_LOOP" sh "$C/repair.names" "${batch[@]}" "${issue[@]}"
    fi
    check_count "$C/batch/config/live" /cert.pem "$C/seq.names"

    # No-op: one `certbot renew` over the N lineages, none due (default: 30 days before expiry).
    repeat_timed certbot.noop "${batch[@]}" renew
    ((${FAIL[certbot.noop]} == 0)) || die "a certbot no-op run failed (see $M/certbot.noop.*)"
    grep -q "No renewals were attempted" "$M/certbot.noop.1.log" ||
        die "certbot no-op run renewed something (see $M/certbot.noop.1.log)"
    unset REQUESTS_CA_BUNDLE
}

# How busy the machine is without us (others' builds or tests skew every number): CPU idle share
# over 2 seconds, from /proc/stat.
cpu_idle() {
    local a b
    a=$(head -n 1 /proc/stat)
    sleep 2
    b=$(head -n 1 /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{ t = 0; for (i = 2; i <= NF; i++) t += $i; idle[NR] = $5 + $6; tot[NR] = t }
        END { printf "%.0f%%", 100 * (idle[2] - idle[1]) / (tot[2] - tot[1]) }'
}
# Give other work (e.g. a cargo build that waited for ours) up to IDLE_WAIT seconds to finish.
for ((i = 0; i < ${IDLE_WAIT:-60} / 2; i++)); do
    IDLE_BEFORE=$(cpu_idle)
    ((${IDLE_BEFORE%\%} >= 90)) && break
    ((i > 0)) || log "CPU only $IDLE_BEFORE idle; waiting up to ${IDLE_WAIT:-60} s for the machine to go quiet"
done
[[ -n ${IDLE_BEFORE:-} ]] || IDLE_BEFORE=$(cpu_idle)
log "CPU idle before the measurements: $IDLE_BEFORE"
START=$EPOCHSECONDS
for client in ${CLIENTS:-regcert uacme lego certbot}; do
    "bench_$client"
done
ELAPSED=$((EPOCHSECONDS - START))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# 9. Report
# ---------------------------------------------------------------------------------------------
cell() { # cell KEY -> "1.23 s · 12.3 MB", "1.23 s (1.10–1.50) · 12.3 MB" for medians, or "—"
    local v=${RES[$1]:-} f=${FAIL[$1]:-0}
    [[ -n $v ]] || { printf '—'; return; }
    if ((f > 0)); then
        case $v in
            *\ *\ *\ *) printf '⚠ %d failed run(s) re-run, not counted: ' "$f" ;;
            *) printf '⚠ %d of %d certificates failed: ' "$f" "$N" ;;
        esac
    fi
    echo "$v" | awk 'function num(x) { return x < 1 ? sprintf("%.0f", x * 1000) : sprintf("%.2f", x) }
        function unit(x) { return x < 1 ? "ms" : "s" }
        { range = ""
          if (NF >= 4) {
              same = unit($3) == unit($1) && unit($4) == unit($1)
              range = same ? sprintf(" (%s–%s)", num($3), num($4)) \
                           : sprintf(" (%s %s–%s %s)", num($3), unit($3), num($4), unit($4))
          }
          printf "%s %s%s · %.1f MB", num($1), unit($1), range, $2 / 1024 }'
}
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }
CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
uacme_note=""
((UACME_OK)) || uacme_note=" (uacme skipped: unshare -m not permitted, so it could not trust pebble's TLS root)"

table() {
    cat <<EOF
| Measurement: wall time [median (min–max) where repeated] · peak RSS of the largest process | regcert | uacme | lego | certbot |
|---|---|---|---|---|
| 1 certificate, 1 name: median of $RUNS forced re-issuances | $(cell regcert.one) | $(cell uacme.one) | $(cell lego.one) | $(cell certbot.one) |
| $N certificates, $N names, one at a time (regcert: one run, \`concurrency = 1\`; peers: $N processes in sequence) | $(cell regcert.seq) | $(cell uacme.seq) | $(cell lego.seq) | $(cell certbot.seq) |
| $N certificates, $N names, all at once (regcert: one run, \`concurrency = $N\`; peers: $N processes in parallel) | $(cell regcert.par) | $(cell uacme.par) | $(cell lego.par) | n/a (one certbot per config dir) |
| $N certificates, $N names, regcert default \`concurrency = 4\` (one run) | $(cell regcert.def) | — | — | — |
| No-op renew, $N certificates installed, none due: median of $RUNS (regcert \`renew\`; uacme $N× \`issue\`; lego $N× \`renew\`; certbot \`renew\`) | $(cell regcert.noop) | $(cell uacme.noop) | $(cell lego.noop) | $(cell certbot.noop) |
EOF
}

RESULTS="$BENCH/results.md"
[[ ${CLIENTS:-regcert uacme lego certbot} == "regcert uacme lego certbot" ]] || RESULTS="$W/results.md"
{
    echo "# regcert vs. peer ACME clients against local Pebble"
    echo
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/run.sh\` (total runtime ${ELAPSED}s)."
    echo
    echo "- Machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "- CPU idle in the 2 s before the measurements: $IDLE_BEFORE; load average (1/5/15 min) right after them: $LOAD_AFTER"
    echo "- regcert: $REGCERT_VER, release build"
    echo "- uacme $(pkgver uacme), lego $(pkgver lego), certbot $(pkgver certbot) (python3-acme $(pkgver python3-acme)), pebble $(pkgver pebble) — Debian packages"
    echo "- Pebble: \`PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0 PEBBLE_WFE_NONCEREJECT=$NONCE_REJECT\` ($NONCE_REJECT% of nonces rejected with badNonce; 5 is Pebble's default), loopback only"
    echo "- All keys ECDSA P-256. Account creation is excluded: every client does one untimed warm-up issuance first.$uacme_note"
    echo "- HTTP-01: regcert, lego and certbot use their built-in servers. uacme uses Debian's stock hook and a webroot that a"
    echo "  python web server serves (its RSS is not counted). lego's parallel batch also uses that webroot, because $N processes"
    echo "  cannot bind the one port that Pebble validates."
    echo "- lego and uacme race Pebble with fixed poll intervals (lego sleeps 5 s whenever its first check is early), so their"
    echo "  times swing between runs. Read the min–max ranges. Details: bench/README.md."
    echo
    table
    echo
    if [[ -s $FAILURES ]]; then
        echo "Client runs that failed during this benchmark (Pebble rejects $NONCE_REJECT% of nonces at random; a"
        echo "failed timed run was repeated and is not in the median, and a failed batch certificate was"
        echo "issued afterwards, untimed, so the no-op row still has all $N):"
        echo
        cat "$FAILURES"
        echo
    fi
    echo "See bench/README.md for the exact setup of every cell."
} >"$RESULTS"

echo
table
echo
log "done in ${ELAPSED}s; table written to $RESULTS"
