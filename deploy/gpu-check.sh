#!/usr/bin/env bash
# Runs the CUDA backend's checks on a machine with an NVIDIA GPU, from binaries built elsewhere
# (the device machine has no crate registry). Build and stage them on the build machine:
#
#   deploy/gpu-check.sh stage            # builds into target/gpu-check/ (carry that folder)
#
# then, on the GPU machine, from the repository root:
#
#   deploy/gpu-check.sh run [OUT_DIR]    # GPU tests, then engine-bench on the default model and
#                                        # on random Llama-3.2-1B-shaped models (F16, Q4_0), and
#                                        # the HF transformers baseline on the same shapes
#
# libnvrtc and libcublas must be loadable on the GPU machine: the CUDA toolkit's, or the pip
# wheels nvidia-cuda-nvrtc-cu12 and nvidia-cublas-cu12 that PyTorch installs (their lib folders
# are put on LD_LIBRARY_PATH here).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=target/gpu-check

stage() {
  mkdir -p "$STAGE"
  cargo build --release -p joule-engine --features cuda --bin engine-bench --example random-model
  cp target/release/engine-bench target/release/examples/random-model "$STAGE/"
  # The engine's unit-test binary holds the GPU tests.
  local t
  t=$(cargo test -p joule-engine --features cuda --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["lib"]:
        print(m["executable"])' | tail -1)
  cp "$t" "$STAGE/engine-tests"
  ls -la "$STAGE"
}

run() {
  local out=${1:-${OUT:-/tmp/gpu-check}}
  mkdir -p "$out"
  local wheel pkg
  for pkg in cuda_nvrtc cublas; do
    wheel=$(python3 -c "import nvidia.$pkg, os; print(os.path.join(list(nvidia.$pkg.__path__)[0], 'lib'))" 2>/dev/null || true)
    [[ -n "$wheel" ]] && export LD_LIBRARY_PATH="$wheel:${LD_LIBRARY_PATH:-}"
  done
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  echo "== GPU tests"
  "$STAGE/engine-tests" --ignored --test-threads 1 gpu_ 2>&1 | tee "$out/gpu-tests.txt"
  echo "== engine-bench, default model"
  local model
  model=$(deploy/fetch-default-model.sh 2>/dev/null || echo "$HOME/.cache/joule/models/SmolLM2-135M-Instruct.Q4_1.gguf")
  "$STAGE/engine-bench" --model "$model" --device cuda:0 --workload fixed --fixed-prompt 64 \
    --fixed-output 128 --concurrency 1,8,32,128 --repeats 3 --json | tee "$out/bench-default.jsonl"
  for t in f16 q4_0; do
    echo "== engine-bench, random Llama-3.2-1B shape, $t"
    [[ -f "$out/r1b-$t.gguf" ]] || "$STAGE/random-model" "$t" "$out/r1b-$t.gguf"
    "$STAGE/engine-bench" --model "$out/r1b-$t.gguf" --device cuda:0 --workload fixed \
      --fixed-prompt 64 --fixed-output 128 --concurrency 1,8,32,128 --repeats 3 --json |
      tee "$out/bench-r1b-$t.jsonl"
  done
  echo "== HF transformers baseline (fp16, same shapes and workload)"
  python3 engine/benches/hf_baseline.py --shape smollm2-135m --concurrency 1,8,32,128 \
    --repeats 3 | tee "$out/hf-smollm2-135m.jsonl"
  python3 engine/benches/hf_baseline.py --shape llama-3.2-1b --concurrency 1,8,32,128 \
    --repeats 3 | tee "$out/hf-llama-3.2-1b.jsonl"
}

case "${1:-}" in
  stage) stage ;;
  run) shift; run "$@" ;;
  *) echo "usage: deploy/gpu-check.sh stage | run [OUT_DIR]" >&2; exit 2 ;;
esac
