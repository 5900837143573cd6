#!/usr/bin/env bash
# `make test-container`: the image built from the unmodified Dockerfile and run with the shipped
# docker-compose.yml, as a user would (`docker compose up`; podman and podman-compose here), then the
# `scale` profile behind its load balancer. Checks: tests/container/checks.py. Logs and the image report:
# artifacts/container/. Skipped (exit 0, with the reason) only where podman cannot run at all.
set -euo pipefail
source "$(dirname "$0")/../../deploy/container/env.sh"
cd "$LOCSVC_ROOT"
T0=$SECONDS
export LOCSVC_CT_PROJECT=${LOCSVC_CT_PROJECT:-locsvc-ct}
export PODMAN_COMPOSE
ART=$LOCSVC_ROOT/artifacts/container
mkdir -p "$ART"

skip() { echo "test-container SKIPPED: podman cannot run here: $*"; exit 0; }

# 1. Can containers run on this machine at all? (Only this decides a skip; any later failure is a failure.)
if [ "$(id -u)" != 0 ] && ! unshare --user --map-root-user true 2>/dev/null; then
    skip "not root and no user namespaces (unshare --user fails; see /proc/sys/user/max_user_namespaces)"
fi
if ! unshare --mount --pid --net --uts --ipc --fork true 2>/dev/null &&
    ! unshare --user --map-root-user --mount --pid --net --fork true 2>/dev/null; then
    skip "cannot create mount/pid/network namespaces (unshare fails)"
fi
[ -e /sys/fs/cgroup/cgroup.controllers ] || [ -d /sys/fs/cgroup/memory ] || skip "no cgroup filesystem mounted"
if ! command -v apt-get >/dev/null && ! command -v podman >/dev/null; then
    skip "podman is not installed and this is not a Debian machine (no apt-get) to install it"
fi

# 2. podman, podman-compose, the stand-in base, the images.
bash "$LOCSVC_CONTAINER_DIR/install.sh"
podman info >/dev/null || die "podman info fails with CONTAINERS_CONF=$CONTAINERS_CONF"
log "podman $(podman version --format '{{.Client.Version}}'), $($PODMAN_COMPOSE version 2>/dev/null | head -1)"

cleanup() {
    local rc=$?
    set +e
    for profile in "" "--profile scale"; do
        # shellcheck disable=SC2086
        LOCSVC_API_KEY=cleanup timeout 120 "$PODMAN_COMPOSE" -p "$LOCSVC_CT_PROJECT" --in-pod false \
            -f docker-compose.yml -f deploy/container/compose.scale.yml $profile down -t 5 >/dev/null 2>&1
    done
    left=$(podman ps -aq --filter "label=io.podman.compose.project=$LOCSVC_CT_PROJECT")
    [ -n "$left" ] && podman rm -f -t 5 $left >/dev/null 2>&1
    podman network rm -f "${LOCSVC_CT_PROJECT}_default" >/dev/null 2>&1
    if [ -n "$(podman ps -aq --filter "label=io.podman.compose.project=$LOCSVC_CT_PROJECT")" ]; then
        log "WARNING: containers of $LOCSVC_CT_PROJECT are still there: podman ps -a"
        rc=1
    fi
    log "total $((SECONDS - T0)) s"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup_before=$(podman ps -aq --filter "label=io.podman.compose.project=$LOCSVC_CT_PROJECT")
[ -z "$cleanup_before" ] || { log "removing containers left by an earlier run"; podman rm -f $cleanup_before >/dev/null; }

t=$SECONDS
bash "$LOCSVC_CONTAINER_DIR/base-image.sh"
log "stand-in base: $((SECONDS - t)) s"
t=$SECONDS
bash "$LOCSVC_CONTAINER_DIR/build.sh" api lb
log "images: $((SECONDS - t)) s"

# 3. What the image holds (artifacts/container/image.txt), and no compiler in it.
{
    echo "# $API_IMAGE: $(podman image inspect --format '{{.Size}}' "$API_IMAGE" | numfmt --to=si)B"
    podman history --format '{{.Size}}\t{{.CreatedBy}}' "$API_IMAGE" | cut -c1-160
    echo
    echo "# largest installed packages under /opt/venv (MB)"
    podman run --rm --entrypoint sh "$API_IMAGE" -c \
        'du -sm /opt/venv/lib/python3*/site-packages/* | sort -rn | head -12'
} >"$ART/image.txt"
cat "$ART/image.txt"
compilers=$(podman run --rm --entrypoint sh "$API_IMAGE" -c \
    'for c in gcc cc c++ g++ clang x86_64-linux-gnu-gcc-12 ld as make; do command -v $c; done' || true)
[ -z "$compilers" ] || die "the image has a compiler or build tool: $compilers"
log "no compiler in $API_IMAGE"

# 4. The checks (compose up, endpoints, health, security, stop; the scale profile).
t=$SECONDS
"$LOCSVC_ROOT/.venv/bin/pytest" -p no:cacheprovider --noconftest -o addopts="" -ra -v -s tests/container/checks.py
log "checks: $((SECONDS - t)) s"
