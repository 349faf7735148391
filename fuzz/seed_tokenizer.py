#!/usr/bin/env python3
"""Writes two small tensor-less GGUF seeds that reach Tokenizer::from_gguf, which the tiny
models (no tokenizer metadata) and the 64 KiB real-model prefix (its vocabulary is cut off)
cannot reach:

  tok-gpt2-<model>.gguf   the real model's `gpt2` vocabulary cut to its first N tokens, with
                          the merges among them and its other tokenizer.* keys
  tok-llama-spm.gguf      a synthetic SentencePiece (`llama`) vocabulary with scores, byte
                          tokens and control tokens

usage: seed_tokenizer.py OUTDIR [REAL_MODEL.gguf]   (stdlib only)
"""

import struct
import sys
from pathlib import Path

N_TOKENS = 1024

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FIXED = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
         BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def fmt(self, f):
        (v,) = struct.unpack_from(f, self.buf, self.pos)
        self.pos += struct.calcsize(f)
        return v

    def string(self):
        n = self.fmt("<Q")
        s = self.buf[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def value(self, ty):
        if ty in FIXED:
            return self.fmt(FIXED[ty])
        if ty == STR:
            return self.string()
        if ty == ARR:
            elem, n = self.fmt("<I"), self.fmt("<Q")
            return (elem, [self.value(elem) for _ in range(n)])
        raise ValueError(f"unknown GGUF value type {ty}")


def read_metadata(path):
    """(key, type, value) of every metadata entry; reads only the header."""
    with open(path, "rb") as f:
        buf = f.read(16 << 20)
    r = Reader(buf)
    assert r.buf[:4] == b"GGUF", f"{path}: not a GGUF file"
    r.pos = 4
    r.fmt("<I")
    r.fmt("<Q")  # tensor count
    out = []
    for _ in range(r.fmt("<Q")):
        key = r.string()
        ty = r.fmt("<I")
        out.append((key, ty, r.value(ty)))
    return out


def put_value(out, ty, v):
    if ty in FIXED:
        out += struct.pack(FIXED[ty], v)
    elif ty == STR:
        b = v.encode("utf-8")
        out += struct.pack("<Q", len(b)) + b
    elif ty == ARR:
        elem, items = v
        out += struct.pack("<IQ", elem, len(items))
        for x in items:
            put_value(out, elem, x)
    else:
        raise ValueError(ty)


def gguf_bytes(kvs):
    """A GGUF v3 file with metadata `kvs` and no tensors."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)))
    for key, ty, v in kvs:
        put_value(out, STR, key)
        out += struct.pack("<I", ty)
        put_value(out, ty, v)
    return bytes(out)


def gpt2_seed(real):
    kvs = [kv for kv in read_metadata(real) if kv[0].startswith(("tokenizer.", "general.architecture"))]
    by_key = {k: (ty, v) for k, ty, v in kvs}
    tokens = by_key["tokenizer.ggml.tokens"][1][1][:N_TOKENS]
    vocab = set(tokens)
    out = []
    for key, ty, v in kvs:
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            v = (v[0], v[1][:N_TOKENS])
        elif key == "tokenizer.ggml.merges":
            keep = []
            for m in v[1]:
                a, _, b = m.partition(" ")
                if a in vocab and b in vocab and a + b in vocab:
                    keep.append(m)
            v = (v[0], keep)
        elif key.endswith("_token_id") and v >= N_TOKENS:
            continue
        out.append((key, ty, v))
    return gguf_bytes(out)


def spm_seed():
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    words = ["▁", "e", "t", "h", "a", "o", "n", "s", "▁t", "he", "▁the", "▁a", "an", "▁an",
             "on", "▁on", "s▁", "▁is", "▁i", "i", "<|im_start|>", "<|im_end|>"]
    for w in words:
        tokens.append(w)
        types.append(3 if w.startswith("<|") else 1)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    return gguf_bytes([
        ("general.architecture", STR, "llama"),
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.scores", ARR, (F32, scores)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
        ("tokenizer.ggml.add_space_prefix", BOOL, True),
        ("tokenizer.chat_template", STR,
         "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"),
    ])


def main():
    outdir = Path(sys.argv[1])
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "tok-llama-spm.gguf").write_bytes(spm_seed())
    if len(sys.argv) > 2 and Path(sys.argv[2]).is_file():
        real = Path(sys.argv[2])
        (outdir / f"tok-gpt2-{real.stem}.gguf").write_bytes(gpt2_seed(real))


if __name__ == "__main__":
    main()
