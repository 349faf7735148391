#!/usr/bin/env bash
# Writes the seed corpus for the `gguf` fuzz target into fuzz/corpus/gguf/ (gitignored):
# every tiny GGUF model of joule_engine::testkit::TINY_MODELS, the first 64 KiB of a real model
# (header, metadata and vocabulary; truncated on purpose so the seed stays short), and two small
# tensor-less tokenizer seeds from seed_tokenizer.py (needs python3; skipped without it).
#
#   fuzz/seed.sh                       # real model from ~/.cache/joule/models
#   REAL_MODEL=/path/x.gguf fuzz/seed.sh
set -euo pipefail

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz_dir")
corpus="$fuzz_dir/corpus/gguf"
real_model=${REAL_MODEL:-$HOME/.cache/joule/models/SmolLM2-135M-Instruct.Q4_1.gguf}

mkdir -p "$corpus"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$root" && nice -n 19 cargo run --release -p joule-engine --example write-tiny-models -- "$tmp")
# Safetensors fixtures (directories) are no GGUF seeds; take every .gguf file written.
find "$tmp" -type f -name '*.gguf' | while read -r f; do
    cp "$f" "$corpus/tiny-$(basename "$f")"
done

if [ -f "$real_model" ]; then
    head -c 65536 "$real_model" > "$corpus/real-$(basename "$real_model" .gguf)-64k.gguf"
else
    echo "seed.sh: $real_model not found; no real-model seed" >&2
fi
if command -v python3 >/dev/null; then
    nice -n 19 python3 "$fuzz_dir/seed_tokenizer.py" "$corpus" "$real_model"
else
    echo "seed.sh: no python3; no tokenizer seeds" >&2
fi
ls -l "$corpus"
