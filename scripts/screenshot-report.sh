#!/usr/bin/env bash
# docs/report.png in one command: a screenshot of a real `harness report` on this machine's numbers.
#   scripts/screenshot-report.sh              measure MODEL with BUILDS here, then report and screenshot
#   scripts/screenshot-report.sh RESULT...    report on existing result files instead
# Environment: MODEL (default unet), BUILDS (default: every build), REPEATS (default 10),
# OUT (default docs/report.png). Needs Chromium (scripts/setup.sh --dev installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=("$@")
if (( ${#results[@]} == 0 )); then
    run=(.venv/bin/python -m harness run --model "${MODEL:-unet}" --repeats "${REPEATS:-10}"
         --output "$work/run.json")
    [[ -n "${BUILDS:-}" ]] && run+=(--builds "$BUILDS")
    "${run[@]}"
    results=("$work/run.json")
fi
.venv/bin/python -m harness report "${results[@]}" --output-dir "$work/reports" \
    --screenshot "${OUT:-docs/report.png}"
