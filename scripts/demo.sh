#!/usr/bin/env bash
# The demo: replay a week of realistic multi-tenant LLM traffic (with incidents injected)
# through every detector and print the alerts. No broker or Redis needed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
OUT=${RUN_DIR:-.run}
mkdir -p "$OUT"
"$VENV/bin/sentinel" replay --rules rules --out "$OUT/demo-alerts.jsonl" \
    --dead-letter "$OUT/demo-dead-letter.jsonl" replay_data/sample.jsonl.gz
"$VENV/bin/sentinel" alerts "$OUT/demo-alerts.jsonl"
