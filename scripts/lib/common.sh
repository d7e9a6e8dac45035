# shellcheck shell=bash
# What scripts/*.sh and bench/*.sh share. Source it (bash, after `set -euo pipefail`):
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"          # from scripts/
#   source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/common.sh"  # from bench/
#
# Sourcing it sets REPO (the checkout), BENCH ($REPO/bench) and PY (python3), and installs an EXIT trap that runs the
# at_exit commands, kills (and reaps) every process id in the array PIDS, and removes the scratch
# directory made by scratch_dir unless KEEP=1 or the script failed. A script that sets its own
# EXIT trap loses all that.
#
#   log MESSAGE / die MESSAGE      a "[LOG_TAG HH:MM:SS] …" line on stderr / and exit 1
#   PIDS+=("$!") / at_exit CMD     what to stop when the script ends
#   scratch_dir VAR PATTERN        VAR=$(mktemp -d PATTERN), removed at exit on success
#   free_ports VAR...              each VAR a free 127.0.0.1 port, never the same twice in a run
#   wait_port PORT [SECONDS [PID NAME]] / wait_port_free PORT / wait_url SECONDS [CURL_OPTION...] URL
#   elapsed_s T0 [T1]              seconds (6 decimals) from T0 to T1 (default: now), $EPOCHREALTIME values
#   build_regcert ATTEMPTS [COPY]  cargo build --release --locked; sets REGCERT, REGCERT_VERSION, GIT_REV, GIT_DIRTY
#   regcert_under_test COPY        $REGCERT_BIN if set, else build_regcert 3 COPY (the benchmarks)
#   demo_start                     install-deps.sh, build_regcert, DEMO_DIR (the start of scripts/demo*.sh)
#   acme_toml URL CA_BUNDLE CONTACT [HTTP01_LISTEN] / cert_toml NAME DOMAIN INSTALL_DIR
#                                  pieces of a regcert config (see scripts/lib/pebble.sh for Pebble)

[[ -z ${REGCERT_COMMON_SH:-} ]] || return 0
REGCERT_COMMON_SH=1

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC2034 # for the caller
BENCH=$REPO/bench
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3 || echo python3)

# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------
log() { printf '[%s %s] %s\n' "${LOG_TAG:-${0##*/}}" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------------------------------------
# What we started, and the cleanup at exit
# ---------------------------------------------------------------------------------------------
PIDS=()       # processes this script started: killed and reaped at exit
AT_EXIT=()    # shell commands run at exit, before PIDS are killed (containers, nginx, …)
SCRATCH=""    # the scratch directory of scratch_dir

at_exit() { AT_EXIT+=("$1"); }

scratch_dir() { # scratch_dir VAR PATTERN: a new directory (mktemp -d PATTERN) in VAR
    SCRATCH=$(mktemp -d "$2")
    printf -v "$1" '%s' "$SCRATCH"
    log "scratch directory $SCRATCH"
}

common_cleanup() {
    local rc=$? cmd pid
    for cmd in "${AT_EXIT[@]}"; do eval "$cmd" || true; done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n $SCRATCH && -d $SCRATCH ]]; then
        if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then log "scratch directory kept: $SCRATCH"; else rm -rf "$SCRATCH"; fi
    fi
}
trap common_cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Ports and waiting
# ---------------------------------------------------------------------------------------------
USED_PORTS=""  # every port free_ports handed out in this run

# free_ports VAR...: each VAR gets a port on 127.0.0.1 that nothing listens on, all different, and
# none handed out before in this run (the kernel may offer a just-closed port again).
free_ports() {
    local ports i=0 p
    # shellcheck disable=SC2086 # USED_PORTS is a list of numbers
    ports=$("$PY" -c '
import socket, sys
n, avoid = int(sys.argv[1]), set(sys.argv[2:])
socks, ports = [], []
while len(ports) < n:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)  # held open until all are picked: no duplicates within one call
    p = str(s.getsockname()[1])
    if p not in avoid:
        avoid.add(p)
        ports.append(p)
print(" ".join(ports))' "$#" $USED_PORTS) || die "no free ports"
    for p in $ports; do
        i=$((i + 1))
        printf -v "${!i}" '%s' "$p"
        USED_PORTS+=" $p"
    done
}

# wait_port PORT [SECONDS [PID NAME]]: until something listens on 127.0.0.1:PORT (default 10 s);
# returns 1 on timeout. With PID: dies as soon as that process (NAME) is gone.
wait_port() {
    local i
    for ((i = 0; i < ${2:-10} * 20; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        [[ -z ${3:-} ]] || kill -0 "$3" 2>/dev/null || die "${4:-process $3} exited before it listened on 127.0.0.1:$1"
        sleep 0.05
    done
    return 1
}

# wait_port_free PORT: until nobody listens on 127.0.0.1:PORT (up to 10 s), or die.
wait_port_free() {
    local i
    for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 0
        sleep 0.05
    done
    die "port $1 is still busy"
}

# wait_url SECONDS [CURL_OPTION...] URL: until curl gets an answer (any HTTP status) from URL;
# returns 1 after SECONDS.
wait_url() {
    local i tries=$(($1 * 10))
    shift
    for ((i = 0; i < tries; i++)); do
        curl -s -o /dev/null --max-time 1 "$@" && return 0
        sleep 0.1
    done
    return 1
}

# elapsed_s T0 [T1]: seconds from T0 to T1 (default: now), both $EPOCHREALTIME values, 6 decimals.
# Called as $(elapsed_s T0), "now" is taken after the fork: pass T1 when a millisecond matters.
elapsed_s() { awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN { printf "%.6f\n", b - a }'; }

# ---------------------------------------------------------------------------------------------
# regcert
# ---------------------------------------------------------------------------------------------
# The regcert under test: $REGCERT_BIN when set (its version and the commit it claims to be),
# else a release build copied to $1 (see build_regcert). Sets REGCERT, REGCERT_VERSION, GIT_REV.
# shellcheck disable=SC2034 # REGCERT_VERSION and GIT_REV are for the caller
regcert_under_test() {
    if [[ -n ${REGCERT_BIN:-} ]]; then
        REGCERT=$REGCERT_BIN
        REGCERT_VERSION=$("$REGCERT" --version | head -n 1)
        GIT_REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown) (REGCERT_BIN=$REGCERT_BIN)"
    else
        build_regcert 3 "$1"
        ((GIT_DIRTY == 0)) || GIT_REV+=" (+ uncommitted changes in src/ or Cargo.*)"
    fi
}

# build_regcert ATTEMPTS [COPY]: `cargo build --release --locked` in REPO, up to ATTEMPTS times,
# 60 s apart (someone may be mid-edit in this checkout). With COPY, the binary is copied there
# right after the build and REGCERT is that private copy: a concurrent build in the same checkout
# cannot swap it mid-run. Sets REGCERT, REGCERT_VERSION (its --version), GIT_REV (short commit or
# "unknown") and GIT_DIRTY (1 when src/ or Cargo.* have uncommitted changes, else 0).
# shellcheck disable=SC2034 # REGCERT_VERSION, GIT_REV, GIT_DIRTY are for the caller
build_regcert() {
    local attempts=$1 copy=${2:-} attempt target
    command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs) first"
    log "building regcert (cargo build --release --locked)"
    for ((attempt = 1; ; attempt++)); do
        (cd "$REPO" && cargo build --release --locked) && break
        ((attempt < attempts)) || die "cargo build --release --locked failed"
        log "build failed (attempt $attempt of $attempts; someone may be mid-edit); retrying in 60 s"
        sleep 60
    done
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$REPO/$target
    REGCERT=$target/release/regcert
    [[ -x $REGCERT ]] || die "no $REGCERT after the build"
    if [[ -n $copy ]]; then
        cp "$REGCERT" "$copy"
        REGCERT=$copy
    fi
    REGCERT_VERSION=$("$REGCERT" --version | head -n 1)
    GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    GIT_DIRTY=0
    [[ -z $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || GIT_DIRTY=1
}

# demo_start: how scripts/demo.sh and demo-acme.sh begin: missing Debian packages
# (scripts/install-deps.sh), a release build of regcert (REGCERT), and DEMO_DIR, a new directory
# /tmp/regcert-demo.* that stays after the demo.
# shellcheck disable=SC2034 # DEMO_DIR is for the caller
demo_start() {
    bash "$REPO/scripts/install-deps.sh"
    build_regcert 1
    DEMO_DIR=$(mktemp -d /tmp/regcert-demo.XXXXXX)
}

# acme_toml DIRECTORY_URL CA_BUNDLE CONTACT [HTTP01_LISTEN]: prints the [acme] table of a regcert
# config for a local ACME server such as Pebble (CA_BUNDLE: what its HTTPS listener is signed by),
# and the [http01] table when HTTP01_LISTEN is given. Each table starts with a blank line.
acme_toml() {
    printf '\n[acme]\ndirectory = "%s"\ncontact = ["mailto:%s"]\naccept_terms = true\nca_bundle = "%s"\n' "$1" "$3" "$2"
    [[ -z ${4:-} ]] || printf '\n[http01]\nlisten = "%s"\n' "$4"
}

# cert_toml NAME DOMAIN INSTALL_DIR: prints a [[certificate]] table: one ECDSA P-256 certificate
# for DOMAIN, installed as INSTALL_DIR/domain.crt (full chain) and domain.key.
cert_toml() {
    printf '\n[[certificate]]\nname = "%s"\ndomains = ["%s"]\nkey = "ecdsa-p256"\n[certificate.install]\ndir = "%s"\nfullchain = "domain.crt"\nkey = "domain.key"\n' \
        "$1" "$2" "$3"
}

# One `regcert run` at a time for the benchmarks: start_daemon CONFIG LOG starts it ($REGCERT,
# output in LOG and LOG.stdout; its pid in DPID and PIDS), stop_daemon sends SIGTERM and waits.
# check_lines prints the log's one line per finished check.
DPID=
DLOG=
start_daemon() { # start_daemon CONFIG LOG
    DLOG=$2
    "$REGCERT" --config "$1" run >"$DLOG.stdout" 2>"$DLOG" &
    DPID=$!
    PIDS+=("$DPID")
}
stop_daemon() {
    kill -TERM "$DPID" 2>/dev/null || true
    local rc=0
    wait "$DPID" || rc=$?
    ((rc == 0)) || log "WARNING: regcert run exited $rc after SIGTERM (log: $DLOG)"
    DPID=
}
plain() { sed 's/\x1b\[[0-9;]*m//g' "$DLOG"; }
check_lines() { plain | grep -E '[0-9]+ certificates: [0-9]+ renewed, [0-9]+ failed, [0-9]+ backing off' || true; }
