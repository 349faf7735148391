#!/usr/bin/env bash
# The engine against llama.cpp at each SIMD level: for every level named (default: every level
# this CPU runs but scalar), llama.cpp is built for that level only (engine/benches/llamacpp.sh
# with LLAMACPP_LEVEL: GGML_NATIVE=OFF and only the matching GGML_* flags), and the engine is
# forced to it with JOULE_SIMD. Per level and model, in the same run:
#   1. `cargo bench -p joule-engine --bench inference` with LLAMA_BENCH: pp512 and tg128 against
#      llama-bench, decode against the copy-bandwidth roofline;
#   2. `engine-bench --workload fixed` with --llama-batched-bench: STREAMS streams of
#      PROMPT in / OUTPUT out against llama-batched-bench.
#
# Usage: engine/benches/levels.sh [avx2|avx512|avx512-vnni ...]
# Environment: MODELS (space-separated GGUF paths; default: the default model and the
#   random-weight Llama-3.2-1B-shaped Q4_K_M, written to /tmp/joule-bench by
#   examples/random-model.rs when missing), THREADS (2), REPEATS (3), STREAMS (32),
#   PROMPT (128), OUTPUT (128), SKIP_SERVING=1 to run only step 1, ACTIVATIONS (the engine's
#   activation precisions to run, space-separated: int16 and/or int8; default int16).
# Output: markdown tables on stdout, one section per level and model; logs on stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS=${THREADS:-2}
REPEATS=${REPEATS:-3}
STREAMS=${STREAMS:-32}
PROMPT=${PROMPT:-128}
OUTPUT=${OUTPUT:-128}
log() { echo "[levels.sh] $*" >&2; }

if [[ -z "${MODELS:-}" ]]; then
    big=/tmp/joule-bench/llama-3.2-1b-shape-q4_k_m.gguf
    if [[ ! -f $big ]]; then
        mkdir -p /tmp/joule-bench
        cargo run --quiet --release -p joule-engine --example random-model -- q4_k_m "$big" >&2
    fi
    MODELS="$(deploy/fetch-default-model.sh) $big"
fi

LEVELS=("$@")
if [[ ${#LEVELS[@]} -eq 0 ]]; then
    flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
    has() { [[ " $flags " == *" $1 "* ]]; }
    has avx2 && has fma && has f16c && LEVELS+=(avx2)
    has avx512f && has avx512bw && LEVELS+=(avx512)
    has avx512f && has avx512bw && has avx512vl && has avx512_vnni && LEVELS+=(avx512-vnni)
fi
[[ ${#LEVELS[@]} -gt 0 ]] || { echo "no SIMD level to bench on this CPU" >&2; exit 1; }

cargo build --quiet --release -p joule-engine --bin engine-bench >&2
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); levels: ${LEVELS[*]}; threads: $THREADS"
# The first level gets a full llama.cpp build; the others build only libggml-cpu (the one
# library whose code depends on the instruction set) and run the first build's binaries with
# LD_LIBRARY_PATH pointing at it (their RUNPATH gives way to it).
base=""
for l in avx2 avx512 avx512-vnni; do
    [[ -z $base && -x /tmp/llamacpp-build-$l/bin/llama-bench ]] && base=/tmp/llamacpp-build-$l
done
for level in "${LEVELS[@]}"; do
    dir=/tmp/llamacpp-build-$level
    first=${MODELS%% *}
    if [[ -z $base && ! -x $dir/bin/llama-bench ]] || [[ -x $dir/bin/llama-bench ]]; then
        LLAMACPP_LEVEL=$level LLAMACPP_DIR=$dir LLAMACPP_BUILD_ONLY=1 \
            engine/benches/llamacpp.sh "$first" >&2
        bin=$dir/bin
        export LD_LIBRARY_PATH=""
        [[ -z $base ]] && base=$dir
    else
        LLAMACPP_LEVEL=$level LLAMACPP_DIR=$dir LLAMACPP_BUILD_ONLY=1 LLAMACPP_TARGETS=ggml-cpu \
            engine/benches/llamacpp.sh "$first" >&2
        bin=$base/bin
        export LD_LIBRARY_PATH=$dir/bin
    fi
    log "llama.cpp for $level: $(ldd "$bin/llama-bench" | grep -o '[^ ]*libggml-cpu.so[^ ]*' | tail -1)"
    for model in $MODELS; do
    for acts in ${ACTIVATIONS:-int16}; do
        echo
        echo "## JOULE_SIMD=$level, $acts activations, llama.cpp built for $level: $(basename "$model")"
        echo
        export JOULE_ACTIVATIONS=$acts
        JOULE_SIMD=$level JOULE_BENCH_MODEL=$model JOULE_BENCH_THREADS=$THREADS \
            JOULE_BENCH_REPEATS=$REPEATS LLAMA_BENCH=$bin/llama-bench \
            cargo bench --quiet -p joule-engine --bench inference 2>/dev/null
        [[ ${SKIP_SERVING:-0} == 1 ]] && continue
        echo
        JOULE_SIMD=$level target/release/engine-bench --model "$model" --threads "$THREADS" \
            --concurrency "$STREAMS" --requests "$STREAMS" --workload fixed \
            --fixed-prompt "$PROMPT" --fixed-output "$OUTPUT" \
            --llama-batched-bench "$bin/llama-batched-bench" 2>/dev/null | grep -E 'llama|tok/s' || true
    done
    done
done
