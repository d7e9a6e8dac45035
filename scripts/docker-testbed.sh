#!/usr/bin/env bash
# Starts the Docker engine (if it is not running) and builds the test registry image offline
# from Debian's distribution registry, `regcert-test/registry:2`. No image is pulled: the image is
# FROM scratch with /usr/bin/docker-registry and the two libraries it links against.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ping=(--unix-socket /var/run/docker.sock http://localhost/_ping)
if ! docker version >/dev/null 2>&1; then
  if [ ! -S /var/run/docker.sock ] || ! curl -s "${ping[@]}" >/dev/null; then
    echo "starting dockerd"
    # No iptables here: containers on the default bridge are reached directly from the host.
    # (Not in PIDS: the engine stays up for the tests after this script.) In a session of its
    # own: whoever ends the caller's process group (a killed test run) must not take it along.
    setsid nohup dockerd --iptables=false >/tmp/dockerd.log 2>&1 </dev/null &
    wait_url 60 "${ping[@]}" || true
  fi
fi
curl -sf "${ping[@]}" >/dev/null || die "the Docker engine did not start; see /tmp/dockerd.log"

image=regcert-test/registry:2
if ! docker image inspect "$image" >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  mkdir -p "$ctx/bin" "$ctx/lib" "$ctx/lib64" "$ctx/etc/docker/registry"
  cp /usr/bin/docker-registry "$ctx/bin/registry"
  cp /lib/x86_64-linux-gnu/libc.so.6 "$ctx/lib/"
  cp /lib64/ld-linux-x86-64.so.2 "$ctx/lib64/"
  cat > "$ctx/etc/docker/registry/config.yml" <<'YML'
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
YML
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY bin/registry /bin/registry
COPY lib/libc.so.6 /lib/x86_64-linux-gnu/libc.so.6
COPY lib64/ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2
COPY etc/docker/registry/config.yml /etc/docker/registry/config.yml
EXPOSE 5000
ENTRYPOINT ["/bin/registry", "serve", "/etc/docker/registry/config.yml"]
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "built $image"
fi

# A tiny image for push/pull tests.
tiny=regcert-test/tiny:1
if ! docker image inspect "$tiny" >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  echo "regcert push/pull test payload" > "$ctx/payload.txt"
  printf 'FROM scratch\nCOPY payload.txt /payload.txt\nCMD ["/payload.txt"]\n' > "$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$tiny" "$ctx" >/dev/null 2>&1
  rm -rf "$ctx"
  echo "built $tiny"
fi

# A bridge network with fixed addresses: a restarted container keeps its IP even while other
# tests start and stop containers (on the default bridge it may come back on another address).
docker network inspect regcert-test >/dev/null 2>&1 \
  || docker network create --subnet 172.31.0.0/16 regcert-test >/dev/null
