#!/usr/bin/env bash
# The local stand-in for python:3.11-slim (no registry but Debian's archive and PyPI is reachable here):
# `debootstrap --variant=minbase bookworm` + python3 (3.11), venv, pip, python-is-python3, the headers
# (python3.11-dev, as the official image has them) and ca-certificates with this machine's extra certificate
# authorities (pip inside the build must trust what the host's pip trusts), imported and tagged
# docker.io/library/python:3.11-slim so that the Dockerfile's `FROM python:3.11-slim` resolves locally.
# Built once: reused while its recipe (this script) and the host's extra CA certificates are the same
# (label locsvc.base-key); `--force` rebuilds it.
set -euo pipefail
source "$(dirname "$0")/env.sh"

PKGS=python3,python3-venv,python3-pip,python-is-python3,python3.11-dev,ca-certificates
shopt -s nullglob
EXTRA_CAS=(/usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt)
KEY=$( { cat "$0"; for f in "${EXTRA_CAS[@]}"; do echo "$f"; cat "$f"; done; } | sha256sum | cut -c1-16)

if [ "${1:-}" != --force ] && podman image exists "$BASE_IMAGE" &&
    [ "$(podman image inspect --format '{{index .Labels "locsvc.base-key"}}' "$BASE_IMAGE")" = "$KEY" ]; then
    log "stand-in $BASE_IMAGE present (key $KEY): reused"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/locsvc-base.XXXXXX")
cleanup() {
    for m in proc sys dev/pts dev; do mountpoint -q "$work/root/$m" && umount -l "$work/root/$m"; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

log "debootstrap --variant=minbase $DEBIAN_SUITE ($PKGS) from $DEBIAN_MIRROR"
debootstrap_once() {
    rm -rf --one-file-system "$work/root"
    debootstrap --variant=minbase --include="$PKGS" "$DEBIAN_SUITE" "$work/root" "$DEBIAN_MIRROR" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; return 1; }
}
retry 3 debootstrap_once || die "debootstrap (Debian's archive at $DEBIAN_MIRROR unreachable?)"

if [ ${#EXTRA_CAS[@]} -gt 0 ]; then
    log "extra CA certificates: ${EXTRA_CAS[*]}"
    cp "${EXTRA_CAS[@]}" "$work/root/usr/local/share/ca-certificates/"
    chroot "$work/root" update-ca-certificates >/dev/null
fi
# Slim: no apt lists, caches, docs or man pages (what python:3.11-slim leaves out too).
chroot "$work/root" apt-get clean
rm -rf "$work/root"/var/lib/apt/lists/* "$work/root"/var/cache/apt/*.bin "$work/root"/usr/share/doc/* \
    "$work/root"/usr/share/man/* "$work/root"/usr/share/info/* "$work/root"/var/log/* "$work/root"/tmp/*
chroot "$work/root" python --version >/dev/null || die "python missing in the stand-in"

log "podman import -> $BASE_IMAGE"
tar --numeric-owner -C "$work/root" -c . | podman import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --change "LABEL locsvc.base-key=$KEY" \
    --change "LABEL locsvc.stand-in=debootstrap-minbase-$DEBIAN_SUITE" \
    - "$BASE_IMAGE" >/dev/null
log "stand-in $BASE_IMAGE built: $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" | numfmt --to=iec) (key $KEY)"
