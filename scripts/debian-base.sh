#!/usr/bin/env bash
# A Debian 12 (bookworm) base image built with mmdebstrap, for machines that reach Debian's
# archive but no container registry. The same base builds the image (build-image.sh --base
# mmdebstrap), the .deb's virtualenv (Debian's own /usr/bin/python3) and tests the package.
#
#   bash scripts/debian-base.sh [--tag TAG] [--rootfs FILE]
#
# --rootfs keeps the tarball: an existing file is imported again without mmdebstrap (about
# 3 minutes saved). An image already present under TAG is reused as it is. The last line
# printed is the image reference.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/podman-common.sh

tag=localhost/scep-ca-base:bookworm
rootfs=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag=$2; shift 2 ;;
        --rootfs) rootfs=$2; shift 2 ;;
        *) echo "usage: $0 [--tag TAG] [--rootfs FILE]" >&2; exit 2 ;;
    esac
done

if "${PODMAN[@]}" image exists "$tag"; then
    echo "$tag"
    exit 0
fi
tmp=""
if [ -z "$rootfs" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    rootfs=$tmp/rootfs.tar
fi
if [ ! -s "$rootfs" ]; then
    # minbase: Essential packages and apt; python3 for the venv, ca-certificates for outbound
    # TLS (Intune, webhooks). passwd (useradd) and adduser come with minbase.
    mmdebstrap --quiet --format=tar --variant=minbase --include=python3,ca-certificates bookworm \
        "$rootfs.part" >&2
    mv "$rootfs.part" "$rootfs"
fi
"${PODMAN[@]}" import --quiet "$rootfs" "$tag" >&2
echo "$tag"
