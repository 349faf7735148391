#!/usr/bin/env bash
# Joule's first command: fetches the default model, builds the binaries, starts a local cluster
# on 127.0.0.1 (three scheduler replicas, one worker, one gateway), applies the default model as
# a deployment and a tenant with an API key (kept in $JOULE_RUN_DIR/api-key), and answers a
# first request through the gateway's OpenAI API with plain curl.
# Everything keeps running in the background; `deploy/quickstart.sh stop` stops it.
#   JOULE_RUN_DIR   state and logs (default /tmp/joule-quickstart)
#   JOULE_PROFILE   cargo profile of the binaries: release (default) or debug
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${JOULE_RUN_DIR:-${TMPDIR:-/tmp}/joule-quickstart}"
PROFILE="${JOULE_PROFILE:-release}"
BIN="target/$PROFILE"
HTTP="${JOULE_HTTP_LISTEN:-127.0.0.1:8080}"
SCHEDULERS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
# Local-only defaults; set your own to keep them private (then they are never printed).
TOKEN_HINT='$JOULE_ADMIN_TOKEN'
[[ -n "${JOULE_ADMIN_TOKEN:-}" ]] || TOKEN_HINT=quickstart-admin
export JOULE_ADMIN_TOKEN="${JOULE_ADMIN_TOKEN:-quickstart-admin}"
export JOULE_JOIN_TOKEN="${JOULE_JOIN_TOKEN:-quickstart-join}"
export JOULE_PEER_TOKEN="${JOULE_PEER_TOKEN:-quickstart-peer}"
export JOULE_SERVER="$SCHEDULERS" JOULE_TOKEN="$JOULE_ADMIN_TOKEN"
mkdir -p "$RUN_DIR"

stop_all() {
  local any=0
  for f in "$RUN_DIR"/*.pid; do
    [[ -e "$f" ]] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then
      kill -TERM "$(cat "$f")" && any=1
    fi
    rm -f "$f"
  done
  ((any)) && echo "sent SIGTERM to the local cluster (workers drain, then exit)" || echo "nothing running"
}

if [[ "${1:-}" == "stop" ]]; then
  stop_all
  exit 0
fi

# start NAME CMD...: runs CMD in the background unless NAME already runs.
start() {
  local name=$1
  shift
  local pid="$RUN_DIR/$name.pid"
  if [[ -f "$pid" ]] && kill -0 "$(cat "$pid")" 2>/dev/null; then
    return
  fi
  "$@" >"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$pid"
}

# wait_for WHAT SECONDS CMD...: retries CMD until it succeeds.
wait_for() {
  local what=$1 secs=$2
  shift 2
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "timed out waiting for $what; logs in $RUN_DIR" >&2
  tail -n 20 "$RUN_DIR"/*.log >&2
  exit 1
}

MODEL=$(deploy/fetch-default-model.sh)
if [[ "$PROFILE" == release ]]; then
  cargo build --release --locked -p joule-scheduler -p joule-worker -p joule-gateway -p joulectl
else
  cargo build --locked -p joule-scheduler -p joule-worker -p joule-gateway -p joulectl
fi

PEERS=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
for i in 1 2 3; do
  start "scheduler-$i" "$BIN/joule-scheduler" --id "$i" --peers "$PEERS" \
    --listen "127.0.0.1:700$i" --data-dir "$RUN_DIR/scheduler-$i"
done
start worker-1 "$BIN/joule-worker" --node-name worker-1 --listen 127.0.0.1:50071 \
  --metrics-listen 127.0.0.1:9471 --scheduler "$SCHEDULERS" --cache-dir "$RUN_DIR/worker-1"
start gateway "$BIN/joule-gateway" --scheduler "$SCHEDULERS" --http-listen "$HTTP" \
  --grpc-listen "${JOULE_GRPC_LISTEN:-127.0.0.1:50051}" \
  --metrics-listen "${JOULE_GATEWAY_METRICS_LISTEN:-127.0.0.1:9462}"
echo "started 3 schedulers, a worker and a gateway (logs in $RUN_DIR); waiting for the worker..." >&2

wait_for "the worker to join" 120 bash -c "'$BIN/joulectl' get nodes | grep -q Ready"
"$BIN/joulectl" apply -f - >/dev/null <<YAML
apiVersion: joule/v1
kind: Model
metadata: {name: smollm2}
spec:
  source: "file://$MODEL"
  sha256: b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  sizeBytes: $(stat -c %s "$MODEL")
---
apiVersion: joule/v1
kind: Deployment
metadata: {name: smollm2}
spec: {model: smollm2, replicas: 1}
---
apiVersion: joule/v1
kind: Tenant
metadata: {name: quickstart}
spec:
  limits: {requestsPerMinute: 600, maxConcurrent: 32}
YAML
# The tenant's API key: made once, kept (readable by you only) for the next run.
KEY_FILE="$RUN_DIR/api-key"
if [[ ! -s "$KEY_FILE" ]]; then
  if ! (umask 077 && "$BIN/joulectl" create apikey --tenant quickstart --name quickstart \
    >"$KEY_FILE.new" 2>"$RUN_DIR/create-apikey.log"); then
    cat "$RUN_DIR/create-apikey.log" >&2
    exit 1
  fi
  mv "$KEY_FILE.new" "$KEY_FILE"
fi
export OPENAI_API_KEY="$(cat "$KEY_FILE")"
echo "applied the deployment smollm2 and the tenant quickstart; waiting until it serves (the first load calibrates)..." >&2
wait_for "smollm2 to serve" 600 bash -c \
  "curl -sf http://$HTTP/v1/models -H \"authorization: Bearer \$OPENAI_API_KEY\" | grep -q '\"ready_replicas\":[1-9]'"

# The command is shown with the key's variable, not the key.
echo "+ curl -sS http://$HTTP/v1/chat/completions -H \"authorization: Bearer \$OPENAI_API_KEY\" ..." >&2
curl -sS "http://$HTTP/v1/chat/completions" -H "authorization: Bearer $OPENAI_API_KEY" \
  -H 'content-type: application/json' -d '{
  "model": "smollm2", "max_tokens": 48, "temperature": 0,
  "messages": [{"role": "user", "content": "What is the capital of France?"}]}'
echo
cat >&2 <<MSG

The cluster keeps running. The gateway speaks the OpenAI API at http://$HTTP/v1; requests need
the tenant's key, which is in $KEY_FILE. Try:
  export OPENAI_API_KEY=\$(cat $KEY_FILE) OPENAI_BASE_URL=http://$HTTP/v1
  curl -sN http://$HTTP/v1/chat/completions -H "authorization: Bearer \$OPENAI_API_KEY" \\
    -H 'content-type: application/json' \\
    -d '{"model": "smollm2", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}'
  JOULE_SERVER=$SCHEDULERS JOULE_TOKEN=$TOKEN_HINT $BIN/joulectl get placements -o wide
  JOULE_SERVER=$SCHEDULERS JOULE_TOKEN=$TOKEN_HINT $BIN/joulectl get usage
  curl -s http://${JOULE_GATEWAY_METRICS_LISTEN:-127.0.0.1:9462}/metrics | grep joule_gateway_
  deploy/quickstart.sh stop
MSG
