#!/usr/bin/env bash
# Regenerates the committed reference fixtures under tests/reference/fixtures/:
#   tiny/NAME.json        logits + greedy of the tiny random models (written by the engine's
#                         deterministic test kit, computed by reference.py)
#   smollm2.json          logits + greedy of the default model on cases/smollm2_prompts.json
#   smollm2-SCHEME.json   the same prompts on the default model requantised by the engine's
#                         quantiser (examples/requantize.rs) to q8_0, q6_k and q4_k_m
#   tokenizer_smollm2.json  token ids of cases/tokenizer_corpus.json from llama.cpp's tokenizer
#   tokenizer_tiny_spm.json token ids of cases/tokenizer_spm_corpus.json with the test kit's
#                         SentencePiece vocabulary (spm-vocab.gguf), from llama.cpp's tokenizer
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

echo "== tiny models" >&2
cargo run --quiet --release -p joule-engine --example write-tiny-models -- "$tmp/tiny" > "$tmp/tiny.txt"

# The reference tokenizer: llama.cpp, with special tokens parsed (its default) and BOS added when
# the model says so (SmolLM2: no; the SentencePiece test vocabulary: yes). Each text goes to it byte for byte on stdin, with
# escape processing off (llama-tokenize would otherwise turn a literal backslash-n into a
# newline), and never through a shell variable (a $(...) strips trailing newlines). Writes
# tokenizer_smollm2.json and the id lists of the SmolLM2 prompts.
echo "== tokenizer corpus, SmolLM2 prompts" >&2
python3 - "$LLAMA_TOKENIZE" "$MODEL" "$REF/cases/tokenizer_corpus.json" "$FX/tokenizer_smollm2.json" \
  "$REF/cases/smollm2_prompts.json" "$tmp/smollm2_cases.json" \
  "$tmp/tiny/spm-vocab.gguf" "$REF/cases/tokenizer_spm_corpus.json" "$FX/tokenizer_tiny_spm.json" <<'PY'
import json, os, subprocess, sys
(tokenizer, model, corpus, corpus_out, prompts, prompts_out,
 spm_model, spm_corpus, spm_out) = sys.argv[1:]

def tokenize(model, text, bos):
    out = subprocess.run(
        [tokenizer, "-m", model, "--stdin", "--no-escape", "--ids", "--log-disable"]
        + ([] if bos else ["--no-bos"]),
        input=text.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    ids = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids), (text, out.stdout)
    return ids

def corpus_fixture(model, corpus, out_path, name, bos):
    cases = [{"text": t, "ids": tokenize(model, t, bos)} for t in json.load(open(corpus))["texts"]]
    with open(out_path, "w") as f:
        json.dump({"model": name, "reference": "llama.cpp llama-tokenize", "cases": cases}, f, indent=1)
        f.write("\n")

corpus_fixture(model, corpus, corpus_out, os.path.basename(model), False)
corpus_fixture(spm_model, spm_corpus, spm_out, "testkit::spm_vocab_gguf", True)
with open(prompts_out, "w") as f:
    json.dump({"prompts": [tokenize(model, t, False) for t in json.load(open(prompts))["prompts"]]}, f)
PY

echo "== SmolLM2 logits" >&2
python3 $REF/reference.py logits --model "$MODEL" --cases "$tmp/smollm2_cases.json" \
  --greedy 32 --out "$FX/smollm2.json"

echo "== SmolLM2 requantised by the engine (Q8_0, Q6_K, Q4_K_M)" >&2
python3 -c 'import json, sys; fx = json.load(open(sys.argv[1]));
json.dump({"prompts": [c["prompt_ids"] for c in fx["cases"]]}, open(sys.argv[2], "w"))' \
  "$FX/smollm2.json" "$tmp/smollm2_ids.json"
for scheme in q8_0 q6_k q4_k_m; do
  cargo run --quiet --release -p joule-engine --example requantize -- "$MODEL" "$scheme" "$tmp/smollm2-$scheme.gguf"
  python3 $REF/reference.py logits --model "$tmp/smollm2-$scheme.gguf" --cases "$tmp/smollm2_ids.json" \
    --greedy 8 --out "$FX/smollm2-$scheme.json"
  # The prompts were chosen on the Q4_1 model; keep those whose closest argmax call on this
  # file is wide enough (0.002 of the top logit) to be compared at the engine's error.
  python3 -c 'import json, sys; p = sys.argv[1]; fx = json.load(open(p))
fx["cases"] = [c for c in fx["cases"] if c["min_argmax_margin"] >= 0.002]
assert len(fx["cases"]) >= 3, p; json.dump(fx, open(p, "w"))' "$FX/smollm2-$scheme.json"
done

echo "== tiny model logits" >&2
while read -r name path; do
  python3 $REF/reference.py logits --model "$path" --cases $REF/cases/tiny.json \
    --greedy 32 --out "$FX/tiny/$name.json"
done < "$tmp/tiny.txt"
echo "fixtures written to $FX" >&2
