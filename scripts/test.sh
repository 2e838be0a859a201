#!/usr/bin/env bash
# Lint, type-check and test scep-ca in the repository's own .venv.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -x -k ntlm      # extra arguments go to pytest
#
# Runs every step even when one fails (one CI run shows every problem) and exits
# non-zero if any of them failed. Works on a fresh clone: the venv is created on demand.
set -euo pipefail

cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Real SCEP clients, curl and PostgreSQL (apt only when something is missing).
bash scripts/system-deps.sh

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# Idempotent, and quick when everything is already installed; keeps the venv in step with
# pyproject.toml after a pull.
.venv/bin/pip install -q -e '.[test]'

failed=()
run_step() {
    local name=$1
    shift
    echo "==> ${name}: $*"
    if ! "$@"; then
        failed+=("${name}")
    fi
}

run_step ruff .venv/bin/ruff check .
run_step mypy .venv/bin/mypy
# The layers contract in pyproject.toml ([tool.importlinter]): an upward import fails here.
run_step layers .venv/bin/lint-imports
run_step pytest .venv/bin/pytest -q -p no:cacheprovider "$@"
# In CI, every fuzz harness for 30 s (about 3 minutes in all); locally: bash scripts/fuzz.sh.
if [ "${CI:-}" = "true" ]; then
    run_step fuzz bash scripts/fuzz.sh --seconds 30
fi

if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all checks passed"
