#!/usr/bin/env bash
# Joule's first command: fetches the default model, builds the worker and joulectl, starts a
# joule-worker on 127.0.0.1 (gRPC :50061, metrics :9461) and streams an answer to a first
# request. The worker keeps running in the background; `deploy/quickstart.sh stop` stops it.
# On its first start on a machine the worker calibrates the model (a short sweep, cached).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR="${JOULE_RUN_DIR:-${TMPDIR:-/tmp}/joule-quickstart}"
PID_FILE="$RUN_DIR/worker.pid"
LISTEN="${JOULE_LISTEN:-127.0.0.1:50061}"
export JOULE_WORKER="http://$LISTEN"
mkdir -p "$RUN_DIR"

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

if [[ "${1:-}" == "stop" ]]; then
  if running; then
    kill -TERM "$(cat "$PID_FILE")"
    echo "sent SIGTERM to the worker (it drains, then exits)"
  else
    echo "no worker running"
  fi
  rm -f "$PID_FILE"
  exit 0
fi

MODEL=$(deploy/fetch-default-model.sh)
cargo build --release --locked -p joule-worker -p joulectl

if ! running; then
  target/release/joule-worker --model "$MODEL" --listen "$LISTEN" \
    --metrics-listen "${JOULE_METRICS_LISTEN:-127.0.0.1:9461}" >"$RUN_DIR/worker.log" 2>&1 &
  echo $! >"$PID_FILE"
  echo "started joule-worker (pid $(cat "$PID_FILE"), log $RUN_DIR/worker.log); waiting until it serves..." >&2
fi
if ! target/release/joulectl wait --timeout-s 600; then
  tail -20 "$RUN_DIR/worker.log" >&2
  exit 1
fi
target/release/joulectl chat --temperature 0 --max-tokens 64 "${1:-What is the capital of France?}"
cat >&2 <<MSG

The worker keeps running at $JOULE_WORKER. Try:
  target/release/joulectl stats        # load, joules, calibration curve
  curl -s http://${JOULE_METRICS_LISTEN:-127.0.0.1:9461}/metrics | grep joule_
  deploy/quickstart.sh stop
MSG
