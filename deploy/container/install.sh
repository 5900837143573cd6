#!/usr/bin/env bash
# Installs what building and running the containers needs on a Debian bookworm machine, as root:
# podman and its runtime pieces from Debian's archive, podman-compose from PyPI in its own venv
# (Debian's 1.0.3 passes `${VAR:-}` through literally and mangles the healthcheck).
set -euo pipefail
source "$(dirname "$0")/env.sh"

PACKAGES=(podman runc containernetworking-plugins netavark aardvark-dns iptables catatonit debootstrap)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing Debian packages ${missing[*]} (install them as root: apt-get install ${missing[*]})"
    log "apt-get install ${missing[*]}"
    retry 3 apt-get update -qq
    retry 3 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi

if ! "$PODMAN_COMPOSE" version 2>/dev/null | grep -q "podman-compose version $PODMAN_COMPOSE_VERSION"; then
    log "podman-compose $PODMAN_COMPOSE_VERSION into $COMPOSE_VENV"
    python3 -m venv "$COMPOSE_VENV"
    retry 3 "$COMPOSE_VENV/bin/pip" install --quiet "podman-compose==$PODMAN_COMPOSE_VERSION"
fi
