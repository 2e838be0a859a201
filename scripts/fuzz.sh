#!/usr/bin/env bash
# Run every coverage-guided fuzz harness (tests/fuzz/fuzz_*.py, atheris/libFuzzer) in turn.
#
#   bash scripts/fuzz.sh --seconds 30      # each harness for 30 s (the CI setting)
#   bash scripts/fuzz.sh --seconds 300 ocsp ntlm
#
# Prints the executions per harness. Exits non-zero when any harness raised an exception
# other than its module's own error types; the crashing input is kept under
# fuzz-artifacts/<harness>/ (turn it into a named regression test). Corpora live in a
# temporary directory, seeded from tests/vectors/ by each harness.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=30
harnesses=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --seconds=*) seconds=${1#*=}; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) harnesses+=("$1"); shift ;;
    esac
done
if [ ${#harnesses[@]} -eq 0 ]; then
    harnesses=(message envelope ntlm ocsp verify csr)
fi

python=.venv/bin/python
if ! "$python" -c 'import atheris' 2>/dev/null; then
    .venv/bin/pip install -q -e '.[fuzz]'
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for name in "${harnesses[@]}"; do
    harness=tests/fuzz/fuzz_${name}.py
    [ -f "$harness" ] || { echo "no harness $harness" >&2; exit 2; }
    mkdir -p "$work/$name" "fuzz-artifacts/$name"
    log=$work/$name.log
    status=0
    # -timeout: one input taking 10 s is a finding too (quadratic parsing, a hang).
    "$python" "$harness" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz-artifacts/$name/" "$work/$name" >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ "$status" -ne 0 ]; then
        echo "FAIL ${name}: exit ${status} after ${runs:-?} executions"
        grep -A 30 'Uncaught Python exception' "$log" | head -40 || tail -40 "$log"
        failed+=("$name")
    else
        echo "ok   ${name}: ${runs} executions in ${seconds} s"
        rmdir "fuzz-artifacts/$name" 2>/dev/null || true
    fi
done
rmdir fuzz-artifacts 2>/dev/null || true

if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzzing FAILED: ${failed[*]}" >&2
    exit 1
fi
