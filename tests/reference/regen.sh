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

# The reference tokenizer: llama.cpp, with special tokens parsed (its default) and no BOS added
# (SmolLM2's GGUF says add_bos_token=false). Each text goes to it byte for byte on stdin, with
# escape processing off (llama-tokenize would otherwise turn a literal backslash-n into a
# newline), and never through a shell variable (a $(...) strips trailing newlines). Writes
# tokenizer_smollm2.json and the id lists of the SmolLM2 prompts.
echo "== tokenizer corpus, SmolLM2 prompts" >&2
python3 - "$LLAMA_TOKENIZE" "$MODEL" "$REF/cases/tokenizer_corpus.json" "$FX/tokenizer_smollm2.json" \
  "$REF/cases/smollm2_prompts.json" "$tmp/smollm2_cases.json" <<'PY'
import json, subprocess, sys
tokenizer, model, corpus, corpus_out, prompts, prompts_out = sys.argv[1:]

def tokenize(text):
    if not text:
        return []
    out = subprocess.run(
        [tokenizer, "-m", model, "--stdin", "--no-escape", "--ids", "--log-disable", "--no-bos"],
        input=text.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    ids = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids), (text, out.stdout)
    return ids

texts = json.load(open(corpus))["texts"]
cases = [{"text": t, "ids": tokenize(t)} for t in texts]
with open(corpus_out, "w") as f:
    json.dump({"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "reference": "llama.cpp llama-tokenize",
               "cases": cases}, f, indent=1)
    f.write("\n")
with open(prompts_out, "w") as f:
    json.dump({"prompts": [tokenize(t) for t in json.load(open(prompts))["prompts"]]}, f)
PY

echo "== SmolLM2 logits" >&2
python3 $REF/reference.py logits --model "$MODEL" --cases "$tmp/smollm2_cases.json" \
  --greedy 32 --out "$FX/smollm2.json"

echo "== tiny models" >&2
cargo run --quiet --release -p joule-engine --example write-tiny-models -- "$tmp/tiny" > "$tmp/tiny.txt"
while read -r name path; do
  python3 $REF/reference.py logits --model "$path" --cases $REF/cases/tiny.json \
    --greedy 32 --out "$FX/tiny/$name.json"
done < "$tmp/tiny.txt"
echo "fixtures written to $FX" >&2
