#!/usr/bin/env bash
# Build the Debian package scep-ca_<version>_<arch>.deb: a virtualenv under /opt/scep-ca made
# with Debian 12's own /usr/bin/python3 (inside the mmdebstrap base, in a container without
# network), /usr/bin/scep-ca, /etc/scep-ca/config.yaml (a conffile), the systemd unit, and the
# scep-ca user made by postinst. Plain dpkg-deb, no debhelper.
#
#   bash scripts/build-deb.sh [--out DIR] [--base IMAGE] [--wheelhouse DIR] [--rootfs FILE]
#
# --out        where the .deb goes (default ./dist).
# --base       a Debian 12 image with /usr/bin/python3 (default: scripts/debian-base.sh's).
# --wheelhouse use the wheels in DIR as they are (scripts/wheelhouse.sh); default: fresh ones.
# --rootfs     keep/reuse the mmdebstrap tarball here.
# The last line printed is the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/podman-common.sh

out=dist
base=""
wheelhouse=""
rootfs_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --base) base=$2; shift 2 ;;
        --wheelhouse) wheelhouse=$2; shift 2 ;;
        --rootfs) rootfs_args=(--rootfs "$2"); shift 2 ;;
        *) echo "usage: $0 [--out DIR] [--base IMAGE] [--wheelhouse DIR] [--rootfs FILE]" >&2; exit 2 ;;
    esac
done

version=$(project_version .)
arch=$(dpkg --print-architecture)
if [ -z "$base" ]; then
    base=$(bash scripts/debian-base.sh "${rootfs_args[@]}" | tail -n 1)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$wheelhouse" ]; then
    wheelhouse=$(bash scripts/wheelhouse.sh "$work/wheels" | tail -n 1)
fi
root=$work/root
mkdir -p "$root/opt"

# The venv is made at its final path inside the base, so that its scripts' #! lines and
# pyvenv.cfg name /opt/scep-ca and Debian's /usr/bin/python3. No bytecode: postinst makes it.
"${PODMAN[@]}" run --rm --network none "${ULIMITS[@]}" \
    -v "$(realpath "$wheelhouse"):/wheels:ro" -v "$root/opt:/out" "$base" \
    /bin/sh -ec '
        /usr/bin/python3 -m venv --without-pip /opt/scep-ca
        pip_wheel=$(ls /wheels/pip-*.whl)
        /opt/scep-ca/bin/python "$pip_wheel/pip" install --quiet --no-index --find-links /wheels \
            --no-compile --disable-pip-version-check scep-ca=='"$version"'
        PYTHONDONTWRITEBYTECODE=1 /opt/scep-ca/bin/scep-ca --version
        # The activate scripts are for interactive shells; nothing here uses them.
        rm -f /opt/scep-ca/bin/activate /opt/scep-ca/bin/activate.* /opt/scep-ca/bin/Activate.ps1
        cp -a /opt/scep-ca /out/
    ' >&2

# Debug symbols are of no use in a wheel's extension modules (lintian: unstripped-binary-or-object).
find "$root/opt" -type f -name '*.so*' -exec strip --strip-unneeded --remove-section=.comment \
    --remove-section=.note {} +

install -d "$root/usr/bin" "$root/usr/share/lintian/overrides" "$root/etc/scep-ca" "$root/lib/systemd/system" "$root/usr/share/doc/scep-ca" \
    "$root/DEBIAN"
ln -s /opt/scep-ca/bin/scep-ca "$root/usr/bin/scep-ca"
install -m 0644 packaging/debian/config.yaml "$root/etc/scep-ca/config.yaml"
for unit in packaging/systemd/*.service packaging/systemd/*.timer; do
    # The backup units stay out while they are a commented-out seam.
    if grep -q '^\[Unit\]' "$unit"; then
        install -m 0644 "$unit" "$root/lib/systemd/system/"
    fi
done
install -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/scep-ca"
install -m 0644 packaging/debian/copyright "$root/usr/share/doc/scep-ca/copyright"
cat > "$work/changelog" <<CHANGELOG
scep-ca ($version) stable; urgency=medium

  * Release $version (see the project's git history).

 -- scep-ca maintainers <scep-ca@example.org>  $(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")
CHANGELOG
gzip -9n -c "$work/changelog" > "$root/usr/share/doc/scep-ca/changelog.gz"
for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
echo /etc/scep-ca/config.yaml > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    packaging/debian/control.in > "$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print0 | sed -z 's|^\./||' | sort -z \
    | xargs -0 md5sum) > "$work/md5sums"
mv "$work/md5sums" "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/conffiles" "$root/DEBIAN/control"

mkdir -p "$out"
deb=$(realpath "$out")/scep-ca_${version}_${arch}.deb
# gzip: xz takes a minute longer on two cores for a few MB less.
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >&2
echo "$deb"
