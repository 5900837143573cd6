#!/usr/bin/env bash
# Builds, with podman, the service's image from the unmodified Dockerfile (`api`) and the load balancer's
# image for the `scale` profile (`lb`): deploy/container/build.sh [api] [lb] (both by default).
#   api: podman build --network host --format docker (the docker format keeps the HEALTHCHECK; the OCI
#        format drops it), FROM the local stand-in (base-image.sh); pip inside the build gets this machine's
#        pip configuration and CA bundle as read-only mounts (pip-mounts.py): nothing of it stays in the image.
#   lb:  deploy/container/lb/Dockerfile: Debian's nginx on the same Debian base (see that file for why).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LOCSVC_ROOT"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(api lb)

work=$(mktemp -d "${TMPDIR:-/tmp}/locsvc-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

build() {  # build NAME LOG podman-build-args...
    local name=$1 logf=$2; shift 2
    local t0=$SECONDS
    if ! retry 2 podman build --pull=never --network host --format docker "$@" >"$logf" 2>&1; then
        tail -n 40 "$logf" >&2
        die "podman build of $name (full log: $logf)"
    fi
    log "$name built in $((SECONDS - t0)) s"
}

mkdir -p "$LOCSVC_ROOT/artifacts/container"
for t in "${targets[@]}"; do
    case $t in
    api)
        pip=$LOCSVC_ROOT/.venv/bin/pip
        [ -x "$pip" ] || pip=pip3
        mapfile -t pip_mounts < <(python3 "$LOCSVC_CONTAINER_DIR/pip-mounts.py" "$pip" "$work/pip")
        log "building $API_IMAGE from ./Dockerfile (pip config: ${pip_mounts[*]})"
        build "$API_IMAGE" "$LOCSVC_ROOT/artifacts/container/build-api.log" \
            "${pip_mounts[@]}" -t "$API_IMAGE" -f Dockerfile .
        ;;
    lb)
        log "building $LB_IMAGE from deploy/container/lb/Dockerfile"
        build "$LB_IMAGE" "$LOCSVC_ROOT/artifacts/container/build-lb.log" \
            --build-arg "BASE=$BASE_IMAGE" --build-arg "DEBIAN_MIRROR=$DEBIAN_MIRROR" \
            -t "$LB_IMAGE" -f deploy/container/lb/Dockerfile deploy/container/lb
        ;;
    *) die "unknown target $t (api, lb)" ;;
    esac
done
# Each build with changed sources leaves the previous image and build stage untagged; the latest ones are the
# next build's layer cache. Those older than a day go, so that repeated runs on one machine do not fill its disk.
podman image prune -f --filter until=24h >/dev/null || log "WARNING: podman image prune failed"
