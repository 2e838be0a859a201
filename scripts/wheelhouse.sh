#!/usr/bin/env bash
# Wheels of scep-ca, its dependencies and pip, built on this host for CPython 3.11 (Debian 12's
# Python): a container build or the .deb's venv installs from them with --no-index, because
# the host's pip configuration (index, certificates, proxies) does not reach into a build.
#
#   bash scripts/wheelhouse.sh DIR        # PYTHON=... picks the interpreter (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
python=${PYTHON:-python3}
# A wheel with compiled parts is tagged for one minor version (cp311): a host 3.12 would build
# wheels that Debian 12's 3.11 cannot install.
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "$0: $python is not CPython 3.11 (Debian 12's version); set PYTHON=" >&2
    exit 1
}
mkdir -p "$1"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$python" -m pip wheel --quiet --wheel-dir "$1" . pip >&2
echo "$1"
