#!/usr/bin/env bash
# Benchmark regcert against the peer ACME clients uacme, lego and certbot, all against one local
# Pebble ACME test server (loopback only). See bench/README.md for what every row measures.
#
#   bench/run.sh            # installs missing Debian packages, builds regcert, runs, writes bench/results.md
#
# Environment knobs: RUNS (default 5) runs for the medians, N (default 20) certificates for the
# batch rows, KEEP=1 keeps the scratch directory (logs of every run) instead of deleting it.
set -euo pipefail
export LC_ALL=C

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
RUNS=${RUNS:-5}
N=${N:-20}
TIMED="$BENCH/timed.sh"
PY=/usr/bin/python3

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# 1. Dependencies (Debian packages) and the regcert build
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
command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs) first"
log "building regcert (cargo build --release)"
(cd "$REPO" && cargo build --release)
REGCERT="$REPO/target/release/regcert"
[[ -x $REGCERT ]] || die "no $REGCERT after the build"

# ---------------------------------------------------------------------------------------------
# 2. Scratch directory, cleanup, ports
# ---------------------------------------------------------------------------------------------
W=$(mktemp -d /tmp/regcert-bench.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then log "kept scratch directory $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log "scratch directory $W"

read -r P_ACME P_MGMT P_HTTP P_TLS P_DNS P_DNSMGMT < <("$PY" - <<'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
DIR_URL="https://127.0.0.1:$P_ACME/dir"
HTTP01="127.0.0.1:$P_HTTP"

wait_port() { # wait_port PORT PID NAME
    local i
    for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited; see $W/$3.log"
        sleep 0.05
    done
    die "$3 did not listen on port $1"
}
wait_port_free() { # wait until nobody listens on PORT (the previous client's HTTP-01 server is gone)
    local i
    for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 0
        sleep 0.05
    done
    die "port $1 is still busy"
}

# ---------------------------------------------------------------------------------------------
# 3. Pebble with its own TLS material, and challtestsrv as the DNS server (everything -> 127.0.0.1)
# ---------------------------------------------------------------------------------------------
T="$W/tls"
mkdir -p "$T"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$T/root.key" -out "$T/root.pem" -subj "/CN=regcert bench pebble TLS root" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/key.pem" -out "$T/leaf.csr" -subj "/CN=localhost" 2>/dev/null
cat >"$T/leaf.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
openssl x509 -req -in "$T/leaf.csr" -CA "$T/root.pem" -CAkey "$T/root.key" -CAcreateserial \
    -days 30 -extfile "$T/leaf.ext" -out "$T/cert.pem" 2>/dev/null
ROOT="$T/root.pem"

cat >"$W/pebble.json" <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$P_ACME", "managementListenAddress": "127.0.0.1:$P_MGMT",
  "certificate": "$T/cert.pem", "privateKey": "$T/key.pem", "httpPort": $P_HTTP, "tlsPort": $P_TLS,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
pebble-challtestsrv -dns01 "127.0.0.1:$P_DNS" -management "127.0.0.1:$P_DNSMGMT" \
    -http01 "" -https01 "" -tlsalpn01 "" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    >"$W/challtestsrv.log" 2>&1 &
PIDS+=($!)
wait_port "$P_DNSMGMT" "$!" challtestsrv
PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0 pebble -config "$W/pebble.json" -dnsserver "127.0.0.1:$P_DNS" \
    >"$W/pebble.log" 2>&1 &
PIDS+=($!)
wait_port "$P_ACME" "$!" pebble
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
    wait_port "$P_HTTP" "$WEB_PID" webroot
}
webroot_stop() {
    kill "$WEB_PID" 2>/dev/null || true
    wait "$WEB_PID" 2>/dev/null || true
    WEB_PID=
    wait_port_free "$P_HTTP"
}

# ---------------------------------------------------------------------------------------------
# 4. Measurement helpers. Every result is stored as RES[key]="wall_seconds rss_kb".
# ---------------------------------------------------------------------------------------------
declare -A RES
M="$W/measure"
mkdir -p "$M"

# run_timed KEY EXPECTED_RC CMD...: one timed run, logs to $M/KEY.log, fails loudly on a wrong exit
# code. The command in the array PREFIX (if any) runs first and execs the timing wrapper.
PREFIX=()
run_timed() {
    local key=$1 want=$2 rc=0
    shift 2
    "${PREFIX[@]}" "$TIMED" "$M/$key" "$@" >"$M/$key.log" 2>&1 || rc=$?
    if [[ $rc != "$want" ]]; then
        log "FAILED: $key exited $rc (expected $want); last lines of $M/$key.log:"
        tail -n 25 "$M/$key.log" >&2
        KEEP=1
        exit 1
    fi
    read -r _w _r _c <"$M/$key"
    log "  $key: ${_w}s, ${_r} KB"
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

# check_certs DIR PATTERN COUNT: at least COUNT files matching PATTERN exist (the batch really issued)
check_certs() {
    local n
    n=$(find -L "$1" -name "$2" -type f | wc -l)
    ((n >= $3)) || die "expected $3 certificates named $2 under $1, found $n"
}

names() { # names PREFIX -> PREFIX-01.bench.example.com ... PREFIX-NN.bench.example.com
    local i
    for ((i = 1; i <= N; i++)); do printf '%s-%02d.bench.example.com\n' "$1" "$i"; done
}

# ---------------------------------------------------------------------------------------------
# 5. regcert
# ---------------------------------------------------------------------------------------------
bench_regcert() {
    log "regcert"
    local R="$W/regcert"
    mkdir -p "$R/state"
    # regcert_config FILE CONCURRENCY NAME... (one certificate per name)
    regcert_config() {
        local file=$1 conc=$2 name
        shift 2
        {
            printf 'state_dir = "%s"\n' "$R/state"
            [[ $conc == default ]] || printf 'concurrency = %s\n' "$conc"
            printf '[acme]\ndirectory = "%s"\ncontact = ["mailto:bench@example.com"]\naccept_terms = true\nca_bundle = "%s"\n' "$DIR_URL" "$ROOT"
            printf '[http01]\nlisten = "%s"\n' "$HTTP01"
            for name in "$@"; do
                mkdir -p "$R/install/$name"
                printf '[[certificate]]\nname = "%s"\ndomains = ["%s"]\nkey = "ecdsa-p256"\n[certificate.install]\ndir = "%s"\n' \
                    "$name" "$name" "$R/install/$name"
            done
        } >"$file"
    }
    wait_port_free "$P_HTTP"
    regcert_config "$R/one.toml" 1 regcert-one.bench.example.com
    run_timed regcert.warmup 0 "$REGCERT" -q --config "$R/one.toml" renew # creates the account
    local i
    for ((i = 1; i <= RUNS; i++)); do
        run_timed "regcert.one.$i" 0 "$REGCERT" -q --config "$R/one.toml" renew --force
    done
    RES[regcert.one]=$(median_of regcert.one "$RUNS")

    mapfile -t n_seq < <(names regcert-seq)
    mapfile -t n_par < <(names regcert-par)
    mapfile -t n_def < <(names regcert-def)
    regcert_config "$R/seq.toml" 1 "${n_seq[@]}"
    regcert_config "$R/par.toml" "$N" "${n_par[@]}"
    regcert_config "$R/def.toml" default "${n_def[@]}"
    run_timed regcert.seq 0 "$REGCERT" -q --config "$R/seq.toml" renew
    RES[regcert.seq]=$(single_of regcert.seq)
    run_timed regcert.par 0 "$REGCERT" -q --config "$R/par.toml" renew
    RES[regcert.par]=$(single_of regcert.par)
    run_timed regcert.def 0 "$REGCERT" -q --config "$R/def.toml" renew
    RES[regcert.def]=$(single_of regcert.def)
    check_certs "$R/install" domain.crt $((1 + 3 * N))

    for ((i = 1; i <= RUNS; i++)); do
        run_timed "regcert.noop.$i" 0 "$REGCERT" -q --config "$R/par.toml" renew
    done
    grep -q "0 renewed, $N not due" "$M/regcert.noop.1.log" || die "regcert no-op run did not report $N not due"
    RES[regcert.noop]=$(median_of regcert.noop "$RUNS")
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
    cat >"$U/ns" <<EOF
#!/bin/sh
# Run "\$@" in a private mount namespace where the system CA bundle also holds pebble's TLS root.
exec unshare -m --propagation private sh -c 'mount --bind "$U/bundle.pem" /etc/ssl/certs/ca-certificates.crt && exec "\$@"' sh "\$@"
EOF
    chmod +x "$U/ns"
    if ! "$U/ns" true 2>"$U/unshare.err"; then
        log "uacme skipped: cannot make it trust pebble's TLS root (unshare -m failed: $(cat "$U/unshare.err"))"
        UACME_OK=0
        return 0
    fi
    PREFIX=("$U/ns")
    export UACME_CHALLENGE_PATH="$WEBROOT/.well-known/acme-challenge"
    local base=(uacme -c "$U/conf" -a "$DIR_URL" -t EC -b 256)
    webroot_start
    run_timed uacme.account 0 "${base[@]}" -y new bench@example.com
    run_timed uacme.warmup 0 "${base[@]}" -h "$hook" issue uacme-one.bench.example.com
    local i
    for ((i = 1; i <= RUNS; i++)); do
        run_timed "uacme.one.$i" 0 "${base[@]}" -f -h "$hook" issue uacme-one.bench.example.com
    done
    RES[uacme.one]=$(median_of uacme.one "$RUNS")

    # N certificates, one uacme process per certificate: one after another, and all at once.
    names uacme-seq >"$U/seq.names"
    names uacme-par >"$U/par.names"
    run_timed uacme.seq 0 sh -c 'while read -r n; do "$@" issue "$n" || exit; done' sh "${base[@]}" -h "$hook" <"$U/seq.names"
    RES[uacme.seq]=$(single_of uacme.seq)
    local par='pids=""; while read -r n; do "$@" issue "$n" & pids="$pids $!"; done
        rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc'
    run_timed uacme.par 0 sh -c "$par" sh "${base[@]}" -h "$hook" <"$U/par.names"
    RES[uacme.par]=$(single_of uacme.par)
    check_certs "$U/conf" cert.pem $((1 + 2 * N))

    # No-op: N installed certificates, none due. `uacme issue` exits 1 when it skips a certificate.
    for ((i = 1; i <= RUNS; i++)); do
        run_timed "uacme.noop.$i" 0 sh -c 'while read -r n; do "$@" issue "$n"; [ $? = 1 ] || exit 9; done' \
            sh "${base[@]}" -h "$hook" <"$U/par.names"
    done
    RES[uacme.noop]=$(median_of uacme.noop "$RUNS")
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
    export LEGO_CA_CERTIFICATES="$ROOT"
    local base=(lego --path "$L" --server "$DIR_URL" --accept-tos --email bench@example.com --key-type ec256)
    local http=(--http --http.port "$HTTP01")
    wait_port_free "$P_HTTP"
    run_timed lego.warmup 0 "${base[@]}" "${http[@]}" -d lego-one.bench.example.com run # creates the account
    local i
    for ((i = 1; i <= RUNS; i++)); do
        run_timed "lego.one.$i" 0 "${base[@]}" "${http[@]}" -d lego-one.bench.example.com run
    done
    RES[lego.one]=$(median_of lego.one "$RUNS")

    names lego-seq >"$L/seq.names"
    names lego-par >"$L/par.names"
    # One after another, each process with its own built-in HTTP-01 server.
    run_timed lego.seq 0 sh -c 'while read -r n; do "$@" -d "$n" run || exit; done' sh "${base[@]}" "${http[@]}" <"$L/seq.names"
    RES[lego.seq]=$(single_of lego.seq)
    # All at once: N processes cannot share one listening port, so they write tokens to a webroot
    # that one plain web server serves (lego's documented --http.webroot mode).
    webroot_start
    local par='pids=""; while read -r n; do "$@" -d "$n" run & pids="$pids $!"; done
        rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc'
    run_timed lego.par 0 sh -c "$par" sh "${base[@]}" --http --http.webroot "$WEBROOT" <"$L/par.names"
    RES[lego.par]=$(single_of lego.par)
    webroot_stop
    check_certs "$L/certificates" '*.bench.example.com.crt' $((1 + 2 * N))

    # No-op: `lego renew` per certificate; it exits 0 without renewing when more than 30 days remain.
    for ((i = 1; i <= RUNS; i++)); do
        run_timed "lego.noop.$i" 0 sh -c 'while read -r n; do "$@" -d "$n" renew --days 30 || exit; done' \
            sh "${base[@]}" "${http[@]}" <"$L/par.names"
    done
    grep -q 'no renewal' "$M/lego.noop.1.log" || die "lego no-op run did not skip renewal (see $M/lego.noop.1.log)"
    if grep -qi 'renewing' "$M/lego.noop.1.log"; then die "lego renewed during the no-op run"; fi
    RES[lego.noop]=$(median_of lego.noop "$RUNS")
    unset LEGO_CA_CERTIFICATES
}

# ---------------------------------------------------------------------------------------------
# 8. certbot (standalone authenticator = its built-in HTTP-01 server)
# ---------------------------------------------------------------------------------------------
bench_certbot() {
    log "certbot"
    local C="$W/certbot"
    export REQUESTS_CA_BUNDLE="$ROOT"
    # certbot_base DIR: one certbot "installation" (config, work and logs dir) under DIR
    certbot_base() {
        echo certbot -n --server "$DIR_URL" --config-dir "$1/config" --work-dir "$1/work" --logs-dir "$1/logs"
    }
    local one batch
    read -ra one < <(certbot_base "$C/one")
    read -ra batch < <(certbot_base "$C/batch")
    local issue=(certonly --standalone --http-01-address 127.0.0.1 --http-01-port "$P_HTTP"
        --key-type ecdsa --elliptic-curve secp256r1)
    local reg=(register --agree-tos --register-unsafely-without-email)
    wait_port_free "$P_HTTP"
    run_timed certbot.account 0 "${one[@]}" "${reg[@]}"
    run_timed certbot.warmup 0 "${one[@]}" "${issue[@]}" -d certbot-one.bench.example.com
    local i
    for ((i = 1; i <= RUNS; i++)); do
        run_timed "certbot.one.$i" 0 "${one[@]}" "${issue[@]}" --force-renewal -d certbot-one.bench.example.com
    done
    RES[certbot.one]=$(median_of certbot.one "$RUNS")

    # N certificates one after another (certbot locks its config/work/logs dirs, so one
    # installation cannot run in parallel).
    run_timed certbot.account2 0 "${batch[@]}" "${reg[@]}"
    names certbot-seq >"$C/seq.names"
    run_timed certbot.seq 0 sh -c 'while read -r n; do "$@" -d "$n" || exit; done' sh "${batch[@]}" "${issue[@]}" <"$C/seq.names"
    RES[certbot.seq]=$(single_of certbot.seq)
    check_certs "$C/batch/config/live" cert.pem "$N"

    # No-op: one `certbot renew` over the N lineages, none due (default: 30 days before expiry).
    for ((i = 1; i <= RUNS; i++)); do
        run_timed "certbot.noop.$i" 0 "${batch[@]}" renew
    done
    grep -q "not due for renewal" "$M/certbot.noop.1.log" || die "certbot no-op run did not skip (see $M/certbot.noop.1.log)"
    RES[certbot.noop]=$(median_of certbot.noop "$RUNS")
    unset REQUESTS_CA_BUNDLE
}

START=$EPOCHSECONDS
bench_regcert
bench_uacme
bench_lego
bench_certbot
ELAPSED=$((EPOCHSECONDS - START))

# ---------------------------------------------------------------------------------------------
# 9. Report
# ---------------------------------------------------------------------------------------------
cell() { # cell KEY -> "1.23 s · 12.3 MB", "1.23 s (1.10–1.50) · 12.3 MB" for medians, or "—"
    local v=${RES[$1]:-}
    [[ -n $v ]] || { printf '—'; return; }
    echo "$v" | awk '{ ms = $1 < 1; f = ms ? "%.0f" : "%.2f"; k = ms ? 1000 : 1
          range = NF >= 4 ? sprintf(" (" f "–" f ")", $3 * k, $4 * k) : ""
          printf f " %s%s · %.1f MB", $1 * k, ms ? "ms" : "s", range, $2 / 1024 }'
}
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }
REGCERT_VER="$("$REGCERT" --version 2>/dev/null | head -n 1) (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ', with uncommitted changes'))"
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

{
    echo "# regcert vs. peer ACME clients against local Pebble"
    echo
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/run.sh\` (total runtime ${ELAPSED}s)."
    echo
    echo "- Machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "- regcert: $REGCERT_VER, release build"
    echo "- uacme $(pkgver uacme), lego $(pkgver lego), certbot $(pkgver certbot) (python3-acme $(pkgver python3-acme)), pebble $(pkgver pebble) — Debian packages"
    echo "- Pebble: \`PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0\`, default 5% badNonce rejection, loopback only"
    echo "- All keys ECDSA P-256. Account creation is excluded: every client does one untimed warm-up issuance first.$uacme_note"
    echo
    table
    echo
    echo "See bench/README.md for the exact setup of every cell."
} >"$BENCH/results.md"

echo
table
echo
log "done in ${ELAPSED}s; table written to $BENCH/results.md"
