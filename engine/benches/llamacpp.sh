#!/usr/bin/env bash
# Benchmark baseline: build llama.cpp (CPU only) and run llama-bench on a GGUF model.
#
# Usage: engine/benches/llamacpp.sh MODEL.gguf [THREADS...]     (threads default: 1 2)
#
# 1. Downloads the llama-cpp-python sdist from PyPI (it vendors llama.cpp) into
#    $LLAMACPP_SRC (default /tmp/llamacpp-src) and unpacks it.
# 2. Configures and builds only llama-bench, llama-tokenize, llama-simple and
#    llama-batched-bench into $LLAMACPP_DIR, Release, no network / optional deps.
#    LLAMACPP_LEVEL picks the instruction set, to match the engine's JOULE_SIMD:
#    native (default: -march=native, into /tmp/llamacpp-build), or avx2, avx512,
#    avx512-vnni (GGML_NATIVE=OFF with only that level's GGML_* flags on, AMX off,
#    into /tmp/llamacpp-build-LEVEL). Compiles run under `nice -n 15` with
#    $LLAMACPP_JOBS jobs (default 2).
# 3. Runs `llama-bench -m MODEL -t T -p 512 -n 128 -r 3` per thread count and
#    prints llama-bench's markdown table. With LLAMACPP_SERVER=1 it builds llama-server
#    instead and stops there (for `joulectl bench --compare`, deploy/bench-vs-llamacpp.sh);
#    with LLAMACPP_BUILD_ONLY=1 it stops after the build.
# Each step is skipped when its output already exists, so re-runs only bench.
# The llama.cpp source is downloaded to /tmp at run time and is never committed.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

MODEL="$1"; shift
THREADS=("$@")
[[ ${#THREADS[@]} -eq 0 ]] && THREADS=(1 2)
[[ -f "$MODEL" ]] || { echo "model not found: $MODEL" >&2; exit 1; }

SRC_ROOT="${LLAMACPP_SRC:-/tmp/llamacpp-src}"
LEVEL="${LLAMACPP_LEVEL:-native}"
case "$LEVEL" in
    native) ISA=(-DGGML_NATIVE=ON); DEFAULT_DIR=/tmp/llamacpp-build ;;
    avx2|avx512|avx512-vnni)
        ISA=(-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON
             -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512_VBMI=OFF
             -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
             -DGGML_AVX512="$([[ $LEVEL == avx2 ]] && echo OFF || echo ON)"
             -DGGML_AVX512_VNNI="$([[ $LEVEL == avx512-vnni ]] && echo ON || echo OFF)")
        DEFAULT_DIR=/tmp/llamacpp-build-$LEVEL ;;
    *) echo "LLAMACPP_LEVEL must be native, avx2, avx512 or avx512-vnni, got $LEVEL" >&2; exit 2 ;;
esac
BUILD_DIR="${LLAMACPP_DIR:-$DEFAULT_DIR}"
# LLAMACPP_SERVER=1: also build llama-server (for `joulectl bench --compare`), and skip the
# llama-bench run.
SERVER="${LLAMACPP_SERVER:-0}"
JOBS="${LLAMACPP_JOBS:-2}"
BIN="$BUILD_DIR/bin"

log() { echo "[llamacpp.sh] $*" >&2; }

# --- step 1: source --------------------------------------------------------
find_src() {
    # newest unpacked sdist that contains vendor/llama.cpp
    local d
    d=$(ls -d "$SRC_ROOT"/llama_cpp_python-*/vendor/llama.cpp 2>/dev/null | sort -V | tail -n1 || true)
    [[ -n "$d" && -f "$d/CMakeLists.txt" ]] && echo "$d"
}

SRC=$(find_src || true)
if [[ -z "$SRC" ]]; then
    mkdir -p "$SRC_ROOT"
    if ! ls "$SRC_ROOT"/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
        log "downloading llama-cpp-python sdist into $SRC_ROOT"
        pip download --no-deps --no-binary llama-cpp-python llama-cpp-python -d "$SRC_ROOT" >&2
    fi
    TARBALL=$(ls "$SRC_ROOT"/llama_cpp_python-*.tar.gz | sort -V | tail -n1)
    log "unpacking $TARBALL"
    tar -xzf "$TARBALL" -C "$SRC_ROOT"
    SRC=$(find_src) || { echo "vendor/llama.cpp not found under $SRC_ROOT" >&2; exit 1; }
fi
log "llama.cpp source: $SRC"

# --- step 2: configure + build --------------------------------------------
if ! command -v cmake >/dev/null 2>&1; then
    log "cmake missing; installing"
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
        apt-get update >&2 && apt-get install -y cmake >&2
    else
        pip install cmake >&2
    fi
fi

if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    log "configuring into $BUILD_DIR"
    # LLAMA_CURL is deprecated/ignored in recent llama.cpp; LLAMA_OPENSSL,
    # the server/UI/app targets and the prebuilt UI download are what pull in
    # network or optional deps, so they are all off.
    nice -n 15 cmake -S "$SRC" -B "$BUILD_DIR" \
        -DCMAKE_BUILD_TYPE=Release \
        "${ISA[@]}" \
        -DLLAMA_CURL=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=ON \
        -DLLAMA_BUILD_SERVER="$([[ $SERVER == 1 ]] && echo ON || echo OFF)" \
        -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF >&2
fi

TARGETS=(llama-bench llama-tokenize llama-simple llama-batched-bench)
# LLAMACPP_TARGETS overrides (e.g. "ggml-cpu": only the library whose code depends on the
# instruction set; engine/benches/levels.sh runs another level's binaries against it).
[[ -n "${LLAMACPP_TARGETS:-}" ]] && read -r -a TARGETS <<< "$LLAMACPP_TARGETS"
if [[ $SERVER == 1 ]]; then
    if ! grep -q '^LLAMA_BUILD_SERVER:BOOL=ON' "$BUILD_DIR/CMakeCache.txt"; then
        nice -n 15 cmake "$BUILD_DIR" -DLLAMA_BUILD_SERVER=ON >&2
    fi
    TARGETS=(llama-server)
fi
missing=0
for tgt in "${TARGETS[@]}"; do [[ -x "$BIN/$tgt" || -f "$BIN/lib$tgt.so" ]] || missing=1; done
if [[ $missing -eq 1 ]]; then
    log "building ${TARGETS[*]} (-j$JOBS, nice 15)"
    start=$(date +%s)
    nice -n 15 cmake --build "$BUILD_DIR" --config Release -j"$JOBS" \
        --target "${TARGETS[@]}" >&2
    log "build took $(( $(date +%s) - start )) s"
fi

if [[ $SERVER == 1 ]]; then
    log "built $BIN/llama-server"
    exit 0
fi
if [[ ${LLAMACPP_BUILD_ONLY:-0} == 1 ]]; then
    log "built ${TARGETS[*]} in $BIN"
    exit 0
fi

# --- step 3: bench ----------------------------------------------------------
log "load: $(uptime)"
for t in "${THREADS[@]}"; do
    echo
    echo "### llama-bench -t $t"
    echo
    "$BIN/llama-bench" -m "$MODEL" -t "$t" -p 512 -n 128 -r 3
done
