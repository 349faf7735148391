#!/usr/bin/env bash
# Joule's first command: builds the four binaries, starts a local cluster with
# `joulectl cluster up` (three scheduler replicas, one worker, one gateway on 127.0.0.1; the
# default model fetched once; a tenant and its API key; a context for joulectl), and answers a
# first request through the gateway's OpenAI API with plain curl.
# Everything keeps running in the background; `deploy/quickstart.sh stop` stops it
# (`joulectl cluster down`).
#   JOULE_PROFILE   cargo profile of the binaries: release (default) or debug
#   JOULE_HOME      where the model, the cluster and the context live (default ~/.cache/joule
#                   for data, ~/.config/joule for the context)
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${JOULE_PROFILE:-release}"
CTL="target/$PROFILE/joulectl"

if [[ "${1:-}" == "stop" ]]; then
  exec "$CTL" cluster down
fi

flags=(--locked -p joule-scheduler -p joule-worker -p joule-gateway -p joulectl)
[[ "$PROFILE" == release ]] && flags+=(--release)
cargo build "${flags[@]}"

# Progress bars on a terminal; the summary (base URL and key) on stdout.
"$CTL" cluster up
summary=$("$CTL" cluster up -o json)
read -r BASE KEY < <(python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["baseUrl"], s["apiKey"])' <<<"$summary")

echo "+ curl -sS $BASE/chat/completions -H \"authorization: Bearer \$OPENAI_API_KEY\" ..." >&2
curl -sS "$BASE/chat/completions" -H "authorization: Bearer $KEY" \
  -H 'content-type: application/json' -d '{
  "model": "smollm2", "max_tokens": 48, "temperature": 0,
  "messages": [{"role": "user", "content": "What is the capital of France?"}]}'
echo
cat >&2 <<MSG

The cluster keeps running; joulectl reaches it through the context "local" it wrote. Try:
  export OPENAI_BASE_URL=$BASE OPENAI_API_KEY=<the key above>
  $CTL get nodes; $CTL top nodes; $CTL get events; $CTL logs worker-1 --tail 20
  $CTL bench --requests 32 --concurrency 8 --output-tokens 64
  $CTL cluster status
  deploy/quickstart.sh stop
MSG
