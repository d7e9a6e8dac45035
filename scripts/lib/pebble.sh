# shellcheck shell=bash
# A local Pebble, Let's Encrypt's test CA, on loopback, for scripts/demo-acme.sh and bench/*.sh.
# Source it (bash); it sources common.sh. Debian's pebble ships no certificate for its own HTTPS
# listener, so one is made here with a throwaway root.
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# start_pebble DIR ACME_PORT MGMT_PORT HTTP_PORT TLS_PORT DNS_PORT DNS_MGMT_PORT NONCE_REJECT
#   HTTP_PORT/TLS_PORT: where Pebble validates HTTP-01/TLS-ALPN-01 challenges.
#   DNS_PORT "-": no pebble-challtestsrv, and Pebble resolves names through the system.
#   Otherwise pebble-challtestsrv answers every name with 127.0.0.1 on DNS_PORT.
#   NONCE_REJECT: the percentage of valid nonces Pebble rejects with badNonce (5 is its default).
#   PEBBLE_BIN (environment): the pebble binary (default: pebble on PATH, Debian's 2.4);
#   PEBBLE_PROFILES: a JSON object for Pebble 2.10's "profiles" (default: none in the config).
# Writes DIR/pebble-root.pem (trust it for Pebble's HTTPS: [acme] ca_bundle), DIR/pebble.log;
# appends the process ids to the array PIDS; sets PEBBLE_URL (the directory), PEBBLE_ROOT
# (DIR/pebble-root.pem) and PEBBLE_PID; returns once the directory answers (1 if it does not).
start_pebble() {
    local dir=$1 acme=$2 mgmt=$3 http=$4 tls=$5 dns=$6 dnsmgmt=$7 nonce_reject=$8
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=local pebble root" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$dir/pebble-root.key" -out "$dir/pebble-root.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$dir/pebble.key" -out "$dir/pebble.csr" 2>/dev/null
    openssl x509 -req -in "$dir/pebble.csr" -CA "$dir/pebble-root.pem" -CAkey "$dir/pebble-root.key" -CAcreateserial -days 2 \
        -extfile <(printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid") \
        -out "$dir/pebble.pem" 2>/dev/null
    cat >"$dir/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$acme", "managementListenAddress": "127.0.0.1:$mgmt",
  "certificate": "$dir/pebble.pem", "privateKey": "$dir/pebble.key", "httpPort": $http, "tlsPort": $tls,
  "ocspResponderURL": "", "externalAccountBindingRequired": false${PEBBLE_PROFILES:+, \"profiles\": $PEBBLE_PROFILES}}}
JSON
    local dns_args=()
    if [ "$dns" != "-" ]; then
        pebble-challtestsrv -dns01 "127.0.0.1:$dns" -management "127.0.0.1:$dnsmgmt" -http01 "" -https01 "" -tlsalpn01 "" \
            -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$dir/challtestsrv.log" 2>&1 &
        PIDS+=($!)
        wait_port "$dnsmgmt" 10 "$!" pebble-challtestsrv || { log "pebble-challtestsrv did not start; see $dir/challtestsrv.log"; return 1; }
        dns_args=(-dnsserver "127.0.0.1:$dns")
    fi
    # No random validation delay, and a fresh validation for every order.
    PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0 PEBBLE_WFE_NONCEREJECT=$nonce_reject \
        "${PEBBLE_BIN:-pebble}" -config "$dir/pebble.json" "${dns_args[@]}" >"$dir/pebble.log" 2>&1 &
    PEBBLE_PID=$!
    PIDS+=("$PEBBLE_PID")
    PEBBLE_URL="https://127.0.0.1:$acme/dir"
    PEBBLE_ROOT="$dir/pebble-root.pem"
    wait_url 10 --cacert "$PEBBLE_ROOT" "$PEBBLE_URL" && return 0
    log "pebble did not start; see $dir/pebble.log"
    return 1
}
