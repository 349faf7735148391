#!/usr/bin/env bash
# Regenerates the committed reference fixtures under tests/reference/fixtures/:
#   tiny/NAME.json        logits + greedy of the tiny random models (written by the engine's
#                         deterministic test kit, computed by reference.py)
#   smollm2.json          logits + greedy of the default model on cases/smollm2_prompts.json
#   tokenizer_smollm2.json  token ids of cases/tokenizer_corpus.json from llama.cpp's tokenizer
# Needs: python3 with tests/reference/requirements.txt, the default model
# (deploy/fetch-default-model.sh), and llama.cpp's llama-tokenize (built into /tmp by
# engine/benches/llamacpp.sh; override with LLAMA_TOKENIZE=path).
set -euo pipefail
cd "$(dirname "$0")/../.."
REF=tests/reference
FX=$REF/fixtures
MODEL=$(deploy/fetch-default-model.sh)
LLAMA_TOKENIZE=${LLAMA_TOKENIZE:-${LLAMACPP_DIR:-/tmp/llamacpp-build}/bin/llama-tokenize}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The reference tokenizer: llama.cpp, with special tokens parsed and no BOS added (SmolLM2's
# GGUF says add_bos_token=false).
tokenize() { "$LLAMA_TOKENIZE" -m "$MODEL" -p "$1" --ids --log-disable --no-bos 2>/dev/null | tail -n 1; }

echo "== tokenizer corpus" >&2
python3 - "$REF/cases/tokenizer_corpus.json" > "$tmp/texts.txt" <<'PY'
import json, sys
for t in json.load(open(sys.argv[1]))["texts"]:
    print(json.dumps(t))
PY
{
  echo '{"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "reference": "llama.cpp llama-tokenize", "cases": ['
  first=1
  while IFS= read -r line; do
    text=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]), end="")' "$line")
    ids=$(if [[ -z "$text" ]]; then echo '[]'; else tokenize "$text"; fi)
    [[ $first == 1 ]] || echo ','
    first=0
    printf '{"text": %s, "ids": %s}' "$line" "$ids"
  done < "$tmp/texts.txt"
  echo ']}'
} | python3 -m json.tool --indent 1 > "$FX/tokenizer_smollm2.json"

echo "== SmolLM2 logits" >&2
python3 - "$REF/cases/smollm2_prompts.json" > "$tmp/prompts.txt" <<'PY'
import json, sys
for t in json.load(open(sys.argv[1]))["prompts"]:
    print(json.dumps(t))
PY
{
  echo '{"prompts": ['
  first=1
  while IFS= read -r line; do
    text=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]), end="")' "$line")
    [[ $first == 1 ]] || echo ','
    first=0
    tokenize "$text"
  done < "$tmp/prompts.txt"
  echo ']}'
} > "$tmp/smollm2_cases.json"
python3 $REF/reference.py logits --act-quant --model "$MODEL" --cases "$tmp/smollm2_cases.json" \
  --greedy 32 --out "$FX/smollm2.json"

echo "== tiny models" >&2
cargo run --quiet --release -p joule-engine --example write-tiny-models -- "$tmp/tiny" > "$tmp/tiny.txt"
while read -r name path; do
  python3 $REF/reference.py logits --act-quant --model "$path" --cases $REF/cases/tiny.json \
    --greedy 32 --out "$FX/tiny/$name.json"
done < "$tmp/tiny.txt"
echo "fixtures written to $FX" >&2
