# Sourced by the deploy/container/*.sh scripts and tests/container/run.sh: podman's configuration for this kind
# of machine (see containers.conf), the names used, and small helpers. Nothing system-wide is edited.
# shellcheck shell=bash
LOCSVC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCSVC_CONTAINER_DIR=$LOCSVC_ROOT/deploy/container
# podman-compose 1.6.0 lives in its own venv (git-ignored: .venv-*), not in the project's.
COMPOSE_VENV=${COMPOSE_VENV:-$LOCSVC_ROOT/.venv-compose}
PODMAN_COMPOSE_VERSION=1.6.0
PODMAN_COMPOSE=$COMPOSE_VENV/bin/podman-compose
# The stand-in for python:3.11-slim (Debian bookworm's python3.11), tagged so that the Dockerfile's FROM line
# resolves to it, and the load balancer built on it (Debian's nginx).
BASE_IMAGE=docker.io/library/python:3.11-slim
API_IMAGE=localhost/localization-service:latest
LB_IMAGE=localhost/locsvc-lb:debian
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# containers.conf: default_ulimits must equal this machine's hard limits; when they are not the committed
# file's, a copy with this machine's limits is used instead.
_locsvc_conf() {
    local nofile nproc want
    nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
    [ "$nofile" = unlimited ] && nofile=1048576
    # podman (rootful) lowers its own RLIMIT_NPROC to 32768; the containers cannot have more.
    { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
    want="default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
    if grep -qxF "$want" "$LOCSVC_CONTAINER_DIR/containers.conf"; then
        echo "$LOCSVC_CONTAINER_DIR/containers.conf"
    else
        local gen=${TMPDIR:-/tmp}/locsvc-containers.$nofile.$nproc.conf
        awk -v want="$want" '/^default_ulimits = /{print want; next} {print}' \
            "$LOCSVC_CONTAINER_DIR/containers.conf" >"$gen"
        echo "$gen"
    fi
}
CONTAINERS_CONF=$(_locsvc_conf)
export CONTAINERS_CONF

log() { printf '[container %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# retry N CMD...: a step that depends on the network (apt, pip) is tried N times, 5 s apart.
retry() {
    local n=$1 i; shift
    for ((i = 1; i <= n; i++)); do
        "$@" && return 0
        [ "$i" -lt "$n" ] && { log "attempt $i/$n failed: $*; retrying in 5 s"; sleep 5; }
    done
    log "gave up after $n attempts: $*"
    return 1
}
