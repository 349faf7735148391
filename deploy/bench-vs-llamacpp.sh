#!/usr/bin/env bash
# `joulectl bench` against a local Joule cluster and against llama.cpp's `llama-server -np 32`
# on the same model, threads and workload, in one run (halves in the order Joule, llama.cpp,
# llama.cpp, Joule), printing both and the ratios. The figures in docs/performance.md come
# from this script.
#
# Usage: deploy/bench-vs-llamacpp.sh [THREADS] [REQUESTS] [CONCURRENCY] [IN] [OUT]
#        (defaults: 2 threads, 96 requests, concurrency 32, 128 prompt and 64 output tokens)
#   LLAMA_SERVER  a llama-server binary (default: built by engine/benches/llamacpp.sh into
#                 /tmp/llamacpp-build with LLAMACPP_SERVER=1, -march=native)
#   LLAMA_ARGS    more llama-server flags (e.g. --no-repack)
#   BENCH_OUTPUT  table (default), json or yaml
set -euo pipefail
cd "$(dirname "$0")/.."

T=${1:-2} N=${2:-96} C=${3:-32} IN=${4:-128} OUT=${5:-64}
CTL=target/release/joulectl
MODEL=$(deploy/fetch-default-model.sh)
LLAMA=${LLAMA_SERVER:-/tmp/llamacpp-build/bin/llama-server}
if [[ ! -x "$LLAMA" ]]; then
  LLAMACPP_SERVER=1 engine/benches/llamacpp.sh "$MODEL"
fi
cargo build --release --locked -p joule-scheduler -p joule-worker -p joule-gateway -p joulectl

before=$("$CTL" config current-context 2>/dev/null || true)
"$CTL" cluster up --name bench --threads "$T"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# 32 slots of (context / 32) tokens each: room for the prompt and the answer.
# LLAMA_ARGS: more flags, e.g. --no-repack where weight repacking crashes (it does on this
# project's Sapphire Rapids VMs, whose AMX path llama.cpp cannot use).
"$LLAMA" -m "$MODEL" -t "$T" -np 32 -c $((32 * (IN + OUT + 64))) --host 127.0.0.1 \
  --port "$port" ${LLAMA_ARGS:-} >/tmp/llama-server.log 2>&1 &
llama=$!
cleanup() {
  kill "$llama" 2>/dev/null || true
  "$CTL" cluster down --name bench >/dev/null || true
  [[ -n "$before" ]] && "$CTL" config use-context "$before" >/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 "$llama" 2>/dev/null || { echo "llama-server exited:" >&2; tail -5 /tmp/llama-server.log >&2; exit 1; }
  sleep 0.5
done

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -o -m1 -w -E 'avx512_vnni|avx512bw|avx2' /proc/cpuinfo | sort -u | xargs)" >&2
args=(--requests "$N" --concurrency "$C" --input-tokens "$IN" --output-tokens "$OUT"
  --ignore-eos --warmup 4 --compare "http://127.0.0.1:$port/v1")
"$CTL" --context bench bench "${args[@]}" -o "${BENCH_OUTPUT:-table}"
