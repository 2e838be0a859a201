#!/usr/bin/env bash
# Build the scep-ca container image (packaging/container/Containerfile) with podman.
#
#   bash scripts/build-image.sh [--base IMAGE | --base mmdebstrap] [--tag TAG]
#                               [--wheelhouse DIR] [--rootfs FILE]
#
# --base      the Debian 12 Python base (default docker.io/library/python:3.11-slim-bookworm);
#             `mmdebstrap` builds one from Debian's archive (scripts/debian-base.sh) where no
#             container registry is reachable.
# --tag       default localhost/scep-ca:<version from pyproject.toml>.
# --wheelhouse use the wheels in DIR as they are (made by scripts/wheelhouse.sh from this tree);
#             default: a fresh wheelhouse.
# --rootfs    with --base mmdebstrap: keep/reuse the mmdebstrap tarball here.
# The last line printed is the image reference.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/podman-common.sh

version=$(project_version .)
base=docker.io/library/python:3.11-slim-bookworm
tag=localhost/scep-ca:$version
wheelhouse=""
rootfs_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --base) base=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --wheelhouse) wheelhouse=$2; shift 2 ;;
        --rootfs) rootfs_args=(--rootfs "$2"); shift 2 ;;
        *) echo "usage: $0 [--base IMAGE|mmdebstrap] [--tag TAG] [--wheelhouse DIR] [--rootfs FILE]" >&2; exit 2 ;;
    esac
done

if [ "$base" = mmdebstrap ]; then
    base=$(bash scripts/debian-base.sh "${rootfs_args[@]}" | tail -n 1)
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
if [ -z "$wheelhouse" ]; then
    bash scripts/wheelhouse.sh "$context/wheels" >/dev/null
else
    mkdir -p "$context/wheels"
    cp "$wheelhouse"/*.whl "$context/wheels/"
fi
cp packaging/container/Containerfile "$context/"

# --format docker keeps the HEALTHCHECK (the OCI image format has no field for it); --layers=false
# leaves no untagged build-stage image behind (every build starts from fresh wheels anyway).
"${PODMAN[@]}" build --quiet --layers=false --format docker "${ULIMITS[@]}" \
    --build-arg "BASE=$base" --build-arg "VERSION=$version" \
    --tag "$tag" --file "$context/Containerfile" "$context" >&2
echo "$tag"
