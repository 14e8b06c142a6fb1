#!/usr/bin/env bash
# Run lint and the full test suite against real services started (and stopped) here.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export RUN_DIR=${RUN_DIR:-$PWD/.run}
mkdir -p "$RUN_DIR"

echo "== lint"
"$VENV/bin/ruff" check .
"$VENV/bin/mypy"

echo "== services"
if [ -x scripts/services.sh ] || [ -f scripts/services.sh ]; then
    bash scripts/services.sh start
    trap 'bash scripts/services.sh stop' EXIT
    eval "$(bash scripts/services.sh env)"
fi

echo "== tests"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
