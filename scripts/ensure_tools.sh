#!/usr/bin/env bash
# Install the Prometheus-ecosystem tools the tests need, when they are missing.
#
#   scripts/ensure_tools.sh prometheus alertmanager     # any of: prometheus (prometheus + promtool), alertmanager
#
# Debian packages: `prometheus` (prometheus, promtool) and `prometheus-alertmanager`
# (prometheus-alertmanager, amtool), installed without recommends (no node exporter,
# no services: there is no init system on CI). `apt-get update` runs only when a
# plain install fails. Needs root for the install; otherwise it prints the command.
# Exit status: 0 when every requested tool is on PATH afterwards, 1 otherwise.
set -euo pipefail

declare -A PACKAGE=([prometheus]=prometheus [alertmanager]=prometheus-alertmanager)
declare -A BINARIES=([prometheus]="prometheus promtool" [alertmanager]="prometheus-alertmanager amtool")

have_all() {
    local b
    for b in ${BINARIES[$1]}; do command -v "$b" >/dev/null 2>&1 || return 1; done
}

[ $# -gt 0 ] || { echo "usage: $0 prometheus|alertmanager ..." >&2; exit 2; }
missing=()
for tool in "$@"; do
    [ -n "${PACKAGE[$tool]:-}" ] || { echo "ensure_tools: unknown tool $tool (prometheus|alertmanager)" >&2; exit 2; }
    have_all "$tool" || missing+=("${PACKAGE[$tool]}")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$(id -u)" != 0 ]; then
    echo "ensure_tools: missing ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "ensure_tools: installing ${missing[*]}" >&2
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    apt-get update -qq >>"$log" 2>&1 || true
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "ensure_tools: apt-get install ${missing[*]} failed" >&2
        exit 1
    fi
fi
for tool in "$@"; do
    have_all "$tool" || { echo "ensure_tools: ${BINARIES[$tool]} still missing after installing ${PACKAGE[$tool]}" >&2; exit 1; }
done
