#!/usr/bin/env bash
# Build the offline base image for the TFS simulator image, without pulling anything:
# debootstrap a minimal Debian bookworm with Python 3.11 and tini, then `docker import` it.
#
#   deploy/tfs-sim/build-base-image.sh [IMAGE]      (default tfs-reconciler-base:bookworm)
#
# Needs root, debootstrap, a Docker engine and a Debian mirror (DEBIAN_MIRROR, default
# http://deb.debian.org/debian). The image is labelled with the sha256 of this script, so a
# changed recipe can be told from a stale image (reconciler.testing.docker_bed does that).
set -euo pipefail

image="${1:-tfs-reconciler-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
# python3-venv brings ensurepip, so the image can make a venv and pip-install wheels offline;
# tini is PID 1 so that `docker stop` reaches the server at once.
packages=python3,python3-venv,tini,ca-certificates

recipe_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
rootfs="$(mktemp -d "${TMPDIR:-/tmp}/tfs-base-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT

echo "build-base-image: debootstrap $suite ($packages) from $mirror" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >&2

# Keep the image small and free of host-specific state.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache
: > "$rootfs"/etc/machine-id 2>/dev/null || true

echo "build-base-image: importing as $image" >&2
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.tfs-reconciler.recipe-hash=$recipe_hash" \
  --message "debootstrap --variant=minbase $suite ($packages)" \
  - "$image" >&2
echo "$image"
