#!/usr/bin/env bash
# The deploy kit's checks, offline, in about half a minute once the tools are cached:
# - the Helm chart (helm/joule/tests/check.py): helm lint --strict, helm template with the
#   default and every example values file, kubernetes-validate --strict against Kubernetes
#   1.30, bad values refused with their names, and what the manifests must say;
# - the Dockerfiles, with hadolint;
# - the systemd units, with systemd-analyze verify (their ExecStart pointed at the binaries
#   built here, which must exist: run after `cargo build`), and their exposure score;
# - the Grafana dashboard: valid JSON, and every metric it queries is one a daemon exports.
# Fetches helm, kubernetes-validate and hadolint first (deploy/fetch-deploy-tools.sh).
#   JOULE_BIN_DIR   where the built binaries are (default ${CARGO_TARGET_DIR:-target}/debug);
#                   joulectl there also parses the objects the chart renders
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(deploy/fetch-deploy-tools.sh)
bins="${JOULE_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}"

echo "== helm chart"
HELM="$bin/helm" KUBERNETES_VALIDATE="$bin/kubernetes-validate" JOULECTL="$bins/joulectl" \
  "$bin/chart-python" helm/joule/tests/check.py

echo "== Dockerfiles (hadolint)"
"$bin/hadolint" deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda
echo "ok   hadolint: deploy/docker/Dockerfile, deploy/docker/Dockerfile.cuda"

echo "== systemd units"
if command -v systemd-analyze >/dev/null; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  abs=$(cd "$bins" && pwd)
  for u in deploy/systemd/*.service; do
    name=$(basename "$u" .service)
    [[ -x "$abs/$name" ]] || { echo "FAIL $abs/$name is not built (cargo build first)" >&2; exit 1; }
    sed "s#/usr/local/bin/#$abs/#" "$u" >"$tmp/$(basename "$u")"
  done
  systemd-analyze verify "$tmp"/*.service
  for u in "$tmp"/*.service; do
    echo "ok   systemd-analyze verify $(basename "$u"); $(systemd-analyze security --offline=yes "$u" 2>/dev/null | tail -1 | sed 's/^→ //')"
  done
else
  echo "FAIL systemd-analyze is not installed (apt-get install systemd)" >&2
  exit 1
fi

echo "== Grafana dashboard"
"$bin/chart-python" - deploy/grafana/joule.json <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
exported = set()
for path, prefix in (("worker/src/metrics.rs", "joule_"), ("gateway/src/metrics.rs", "joule_gateway_")):
    src = open(path).read()
    exported |= {prefix + n for n in re.findall(r'^\s*"([a-z_]+)",\s*$', src, re.M)}
    exported |= {prefix + n for n in re.findall(r'register\(\s*"([a-z_]+)"', src)}
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert len(exprs) >= 15, len(exprs)
used = {re.sub(r"_(total|bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"joule_[a-z_]+", e)}
missing = sorted(used - exported)
assert not missing, f"the dashboard queries metrics no daemon exports: {missing}"
for p in d["panels"]:
    if p["type"] != "row":
        assert p.get("description") and p.get("targets"), p["title"]
print(f"ok   Grafana dashboard: {len(d['panels'])} panels, {len(exprs)} queries over {len(used)} exported metrics")
PY
