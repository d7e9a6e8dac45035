#!/usr/bin/env bash
# What regcert ships as, made from one binary:
#
#   bash scripts/package.sh deb [OUT_DIR]   the Debian package OUT_DIR/regcert_VERSION_ARCH.deb
#                                           (default OUT_DIR: target/package); prints its path
#   bash scripts/package.sh image [TAG]     the container image TAG (default regcert:VERSION), built
#                                           offline: FROM scratch, nothing is pulled; prints the tag
#
# The binary is $REGCERT_BIN when set (scripts/test.sh points it at the release build it already
# made), else the release build (`cargo build --release --locked`: a no-op when it is current).
# The man pages and completions come from the binary itself (`regcert generate`), so they
# describe exactly the command line that is packaged.
set -euo pipefail
LOG_TAG=package.sh
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# The image's service user. Fixed, so that volumes can be prepared for it (chown 10001:10001).
IMAGE_UID=10001

usage() { die "usage: scripts/package.sh deb [OUT_DIR] | image [TAG]"; }

binary() {
    if [[ -n ${REGCERT_BIN:-} ]]; then
        REGCERT=$(realpath "$REGCERT_BIN")
        [[ -x $REGCERT ]] || die "REGCERT_BIN=$REGCERT_BIN is not an executable file"
    else
        build_regcert 1
    fi
    VERSION=$("$REGCERT" --version | awk '{print $2}')
    [[ -n $VERSION ]] || die "$REGCERT --version printed no version"
}

# The units in systemd/ name /usr/local/bin/regcert (a binary installed by hand); the package's
# is /usr/bin/regcert.
unit() { sed 's|/usr/local/bin/regcert|/usr/bin/regcert|g' "$REPO/systemd/$1"; }

deb() {
    local out=${1:-$REPO/target/package} arch stage doc glibc depends deb_file
    binary
    arch=$(dpkg --print-architecture)
    mkdir -p "$out"
    out=$(realpath "$out")
    stage=$(mktemp -d "${TMPDIR:-/tmp}/regcert-deb.XXXXXX")
    at_exit "rm -rf '$stage'"
    chmod 0755 "$stage" # the package's "./": mktemp made it 0700
    umask 022
    doc=$stage/usr/share/doc/regcert

    # Stripped, as Debian ships binaries (the release build already is; a debug build is not).
    install -D -s -m 0755 "$REGCERT" "$stage/usr/bin/regcert"
    for u in regcert.service regcert-renew.service regcert-renew.timer; do
        install -d "$stage/lib/systemd/system"
        unit "$u" >"$stage/lib/systemd/system/$u"
    done
    # Opt-in pieces (each file says how to install it): documentation, not active configuration.
    install -d "$doc/examples/regcert.service.d"
    for d in "$REPO"/systemd/regcert.service.d/*.conf; do
        install -m 0644 "$d" "$doc/examples/regcert.service.d/"
    done
    install -m 0644 "$REPO/systemd/regcert-reload.rules" "$doc/examples/"
    install -m 0644 "$REPO/config.example.toml" "$doc/config.example.toml"
    # Not compressed: the units' Documentation= names it.
    install -m 0644 "$REPO/README.md" "$doc/README.md"
    printf 'regcert\n\nLicense: Apache-2.0\n On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n' >"$doc/copyright"

    install -d "$stage/usr/share/man/man1"
    "$REGCERT" generate man "$stage/usr/share/man/man1"
    gzip -9n "$stage"/usr/share/man/man1/*.1
    install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
               "$stage/usr/share/fish/vendor_completions.d"
    "$REGCERT" generate completions bash >"$stage/usr/share/bash-completion/completions/regcert"
    "$REGCERT" generate completions zsh >"$stage/usr/share/zsh/vendor-completions/_regcert"
    "$REGCERT" generate completions fish >"$stage/usr/share/fish/vendor_completions.d/regcert.fish"

    # The config may hold secrets (EAB key, TSIG keys): root writes it, the service user reads it
    # (postinst gives the directory to the group `regcert`).
    install -d -m 0750 "$stage/etc/regcert"

    # The newest glibc symbol version the binary needs is the libc6 it depends on.
    glibc=$(objdump -T "$REGCERT" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    depends="libc6 (>= ${glibc:-2.34}), adduser"
    if ldd "$REGCERT" | grep -q 'libgcc_s'; then depends+=", libgcc-s1"; fi
    install -d "$stage/DEBIAN"
    cat >"$stage/DEBIAN/control" <<EOF
Package: regcert
Version: $VERSION
Architecture: $arch
Maintainer: regcert developers <regcert@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: $depends
Recommends: ca-certificates
Suggests: docker.io, nftables
Section: admin
Priority: optional
Description: keeps the TLS certificates of private container registries valid
 regcert obtains certificates over ACME (Let's Encrypt or any RFC 8555 CA) or from
 its own private CA, installs them atomically into the registry's certificate
 directory, reloads the registry (Docker container, nginx, systemd unit, command),
 proves over HTTPS that the new certificate is served with a complete chain, and
 rolls back when it is not.
 .
 The service (regcert.service) and the timer (regcert-renew.timer) are installed
 but neither enabled nor started: write /etc/regcert/config.toml first (see
 /usr/share/doc/regcert/config.example.toml).
EOF
    install -m 0755 "$REPO/scripts/lib/deb/postinst" "$REPO/scripts/lib/deb/prerm" "$REPO/scripts/lib/deb/postrm" "$stage/DEBIAN/"

    deb_file=$out/regcert_${VERSION}_${arch}.deb
    dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb_file" >/dev/null
    if command -v lintian >/dev/null; then
        lintian --no-tag-display-limit "$deb_file" >&2 || log "lintian has remarks (above)"
    fi
    log "built $deb_file"
    echo "$deb_file"
}

image() {
    local tag=${1:-} ctx lib
    binary
    tag=${tag:-regcert:$VERSION}
    command -v docker >/dev/null || die "docker is needed to build the image: apt-get install docker.io"
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/regcert-image.XXXXXX")
    at_exit "rm -rf '$ctx'"
    umask 022
    install -D -s -m 0755 "$REGCERT" "$ctx/rootfs/usr/bin/regcert"
    # The libraries it links against (libc, libm, libgcc_s, the loader), at the same paths.
    for lib in $(ldd "$REGCERT" | grep -o '/[^ ]*'); do
        install -D -m 0755 "$(realpath "$lib")" "$ctx/rootfs$lib"
    done
    # The ACME client trusts the system's roots (public CAs); a private ACME CA's roots go in the
    # config's ca_bundle.
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] || die "no /etc/ssl/certs/ca-certificates.crt: apt-get install ca-certificates"
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
    install -d -m 0755 "$ctx/rootfs/etc/regcert"
    install -d -m 1777 "$ctx/rootfs/tmp"
    printf 'root:x:0:0:root:/:/sbin/nologin\nregcert:x:%s:%s:regcert:/var/lib/regcert:/sbin/nologin\n' "$IMAGE_UID" "$IMAGE_UID" \
        >"$ctx/rootfs/etc/passwd"
    printf 'root:x:0:\nregcert:x:%s:\n' "$IMAGE_UID" >"$ctx/rootfs/etc/group"
    # Names of the containers next to it (compose services) through Docker's /etc/hosts and DNS.
    printf 'hosts: files dns\n' >"$ctx/rootfs/etc/nsswitch.conf"
    install -d -m 0700 "$ctx/state"
    cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=$IMAGE_UID:$IMAGE_UID state/ /var/lib/regcert/
USER $IMAGE_UID:$IMAGE_UID
VOLUME ["/etc/regcert", "/var/lib/regcert"]
LABEL org.opencontainers.image.title="regcert" org.opencontainers.image.version="$VERSION" \\
      org.opencontainers.image.description="Keeps the TLS certificates of private container registries valid"
ENTRYPOINT ["/usr/bin/regcert"]
CMD ["run"]
EOF
    local built
    built=$(DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" 2>&1) || die "docker build of $tag failed: $built"
    log "built image $tag"
    echo "$tag"
}

case ${1:-} in
    deb) deb "${2:-}" ;;
    image) image "${2:-}" ;;
    *) usage ;;
esac
