#!/usr/bin/env bash
# System packages the tests need (Debian/Ubuntu), and a running PostgreSQL at 127.0.0.1:5432.
#
#   scep        micromdm's scepclient / scepserver (real SCEP client; benchmark reference)
#   certmonger  getcert, scep-submit (real SCEP client, C, OpenSSL)
#   dbus        the private session bus the tests run certmonger on
#   curl        the NTLM and Basic clients of the challenge-URL tests
#   postgresql  the server the store contract suite runs against
#   softhsm2    a software PKCS#11 token for the CA/RA keys in a token (softhsm2-util)
#   opensc      pkcs11-tool, which the tests use to inspect key attributes
#   postgresql-client  pg_dump / pg_restore: `scep-ca backup` and `restore` of a PostgreSQL store
#   age         age, age-keygen: the backup tests open backups with the real age CLI
#   prometheus  promtool: `promtool check rules` / `promtool test rules` on packaging/prometheus/alerts.yml
#
# With --packaging (as .ci/run does), also what tests/packaging needs (issue 22):
#   podman runc       build and run the container image (podman needs runc on these machines)
#   mmdebstrap        the Debian 12 base image, built from Debian's archive (no registry needed)
#   dpkg-dev fakeroot dpkg-deb and friends for scripts/build-deb.sh
#   lintian           checks the .deb
#   systemd           systemd-analyze security/verify on the unit
#   binutils          strip, for the .deb's extension modules
#   chromium, chromium-driver   the headless browser (and its WebDriver) of the console's browser tests
#
# apt-get runs only when something is missing (or with --always, as CI does).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

always=0
packaging=0
for arg in "$@"; do
    case "$arg" in
        --always) always=1 ;;
        --packaging) packaging=1 ;;
        *) echo "usage: $0 [--always] [--packaging]" >&2; exit 2 ;;
    esac
done

need=0
packaging_packages=()
if [ "$packaging" = 1 ]; then
    packaging_packages=(podman runc mmdebstrap dpkg-dev fakeroot lintian systemd binutils)
    for bin in podman runc mmdebstrap dpkg-deb fakeroot lintian systemd-analyze strip; do
        command -v "$bin" >/dev/null 2>&1 || need=1
    done
fi
for bin in scepclient scepserver getcert /usr/lib/certmonger/scep-submit dbus-daemon curl openssl pg_isready \
    softhsm2-util pkcs11-tool /usr/lib/softhsm/libsofthsm2.so promtool /usr/bin/chromium /usr/bin/chromedriver \
    pg_dump pg_restore age age-keygen; do
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "$bin" ]; then
        need=1
    fi
done
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need=1
fi
if [ ! -d /etc/postgresql ] || [ -z "$(ls -A /etc/postgresql 2>/dev/null)" ]; then
    need=1
fi
if [ "$need" = 1 ] || [ "$always" = 1 ]; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends \
        scep certmonger dbus openssl curl postgresql postgresql-client python3-venv \
        softhsm2 opensc prometheus chromium chromium-driver age "${packaging_packages[@]}"
fi

# PostgreSQL at 127.0.0.1:5432; start the newest installed cluster if it is down.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_version=$(ls /etc/postgresql | sort -V | tail -n 1)
    $SUDO pg_ctlcluster --skip-systemctl-redirect "${pg_version}" main start
    for _ in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 0.5
    done
fi
pg_isready -h 127.0.0.1 -p 5432
# The tests connect as postgres without a password over TCP (trust, as on the project's machines).
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    echo "cannot connect to PostgreSQL at 127.0.0.1:5432 as postgres without a password;" >&2
    echo "allow trust for 127.0.0.1 in pg_hba.conf for the test run" >&2
    exit 1
fi
