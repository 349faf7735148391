#!/usr/bin/env python3
"""Independent numpy reference for the inference engine's correctness tests.

Loads a llama/qwen2 model from a GGUF file (via gguf-py) or from a Hugging Face
directory (model.safetensors + config.json, parsed by hand), runs the forward
pass in float64 and writes logits / argmaxes / greedy continuations as JSON.

    python3 reference.py logits  --model PATH --cases CASES.json --out OUT.json [--greedy N] [--top K]
    python3 reference.py dequant --model PATH --tensor NAME --out OUT.json [--rows R]

logits output: {"model", "model_sha256" (of the GGUF file, or of the directory's
*.safetensors files concatenated in name order), "arch", "dtype_summary"
({type: tensor count}), "vocab_size", "rope_interleaved", "cases": [{
"prompt_ids", "top_ids"/"top_values" (top-K of the last position's logits,
descending), "last_logits" (all of them, only when vocab <= 4096) or
"probe_ids"/"probe_values" (ids j * vocab // 256 for j < 256, when vocab > 4096),
"all_positions_argmax", "greedy" (exactly N argmax tokens, no stop on EOS)}]}.
Floats carry 6 significant digits; argmax ties go to the lowest id.
dequant output: {"tensor", "dtype", "shape" (numpy order), "rows" (the first R
rows as float32, shortest round-trip decimals; a 1-D tensor is one row)}.

Weight convention everywhere below: a linear layer is a [out, in] matrix and
y = W @ x (the PyTorch layout). GGUF lists shapes reversed (ne0, the contiguous
dimension, first); gguf-py's ReaderTensor.data is already numpy-ordered
[ne1, ne0] (for quantized types: [ne1, bytes_per_row] of uint8), so a
dequantized GGUF matrix has exactly the PyTorch layout.
"""

import argparse
import glob
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

# HF name suffix -> GGUF name suffix, for the per-layer tensors.
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
SUPPORTED_ARCHS = ("llama", "qwen2")
FULL_LOGITS_MAX_VOCAB = 4096
N_PROBES = 256


@dataclass
class Config:
    arch: str
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    norm_eps: float
    rope_base: float
    rope_dims: int          # rotated dims at the start of each head
    rope_interleaved: bool  # True: pairs (2i, 2i+1); False: NeoX pairs (i, i + rope_dims/2)
    rope_linear_factor: float  # positions are divided by this
    context_length: int


# ---------------------------------------------------------------- GGUF loading

def gguf_field(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_dequant(tensor):
    """Float32 array of a ReaderTensor in numpy order (reverse of the GGUF ne list)."""
    shape = tuple(int(n) for n in reversed(tensor.shape))
    return dequantize(tensor.data, tensor.tensor_type).reshape(shape)


def gguf_rope_scaling_factor(reader, arch):
    kind = gguf_field(reader, f"{arch}.rope.scaling.type", "none")
    if kind == "none":
        return 1.0
    if kind != "linear":
        raise NotImplementedError(f"rope scaling type {kind!r}")
    return float(gguf_field(reader, f"{arch}.rope.scaling.factor"))


def load_gguf(path):
    reader = GGUFReader(path)
    arch = gguf_field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise NotImplementedError(f"architecture {arch!r}")
    tensors = {t.name: t for t in reader.tensors}
    if "rope_freqs.weight" in tensors:
        raise NotImplementedError("per-dimension rope frequency factors (rope_freqs.weight)")

    def meta(key, default=None):
        value = gguf_field(reader, f"{arch}.{key}", default)
        if value is None:
            raise KeyError(f"missing metadata {arch}.{key}")
        return value

    dim = meta("embedding_length")
    n_heads = meta("attention.head_count")
    head_dim = meta("attention.key_length", dim // n_heads)
    cfg = Config(
        arch=arch,
        dim=dim,
        n_layers=meta("block_count"),
        n_heads=n_heads,
        n_kv_heads=meta("attention.head_count_kv", n_heads),
        head_dim=head_dim,
        norm_eps=meta("attention.layer_norm_rms_epsilon"),
        rope_base=meta("rope.freq_base", 10000.0),
        rope_dims=meta("rope.dimension_count", head_dim),
        # convert_hf_to_gguf.py permutes the rows of Q and K for the llama
        # architecture so that llama.cpp can rotate adjacent pairs (GGML rope
        # "normal" mode); qwen2 weights are stored unpermuted and use NeoX mode.
        rope_interleaved=(arch == "llama"),
        rope_linear_factor=gguf_rope_scaling_factor(reader, arch),
        context_length=meta("context_length", 0),
    )

    # our weight name -> GGUF tensor (output.weight falls back to the tied embedding)
    sources = {"tok_embd": tensors["token_embd.weight"],
               "out_norm": tensors["output_norm.weight"],
               "output": tensors.get("output.weight", tensors["token_embd.weight"])}
    for i in range(cfg.n_layers):
        for hf_suffix, gguf_suffix in LAYER_NAMES.items():
            t = tensors.get(f"blk.{i}.{gguf_suffix}")
            if t is not None:
                sources[f"{i}.{hf_suffix}"] = t
    arrays = {t.name: gguf_dequant(t) for t in sources.values()}  # a tied matrix once
    weights = {name: arrays[t.name] for name, t in sources.items()}

    summary = Counter(t.tensor_type.name for t in reader.tensors)
    return cfg, weights, dict(sorted(summary.items())), [path]


# --------------------------------------------------------- safetensors loading

def read_safetensors(path):
    """Parse a .safetensors file: u64 LE header length, JSON header, raw data.

    Returns {name: (dtype_name, float32 array)}.
    """
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    result = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        dtype = info["dtype"]
        if dtype == "F32":
            arr = raw.view("<f4")
        elif dtype == "F16":
            arr = raw.view("<f2").astype(np.float32)
        elif dtype == "BF16":
            # bf16 is the top half of an f32
            arr = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise NotImplementedError(f"safetensors dtype {dtype} ({name})")
        result[name] = (dtype, arr.reshape(info["shape"]))
    return result


def load_safetensors_dir(path):
    with open(os.path.join(path, "config.json")) as f:
        hf = json.load(f)
    arch = hf["model_type"]
    if arch not in SUPPORTED_ARCHS:
        raise NotImplementedError(f"model_type {arch!r}")
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    raw = {}
    for file in files:
        raw.update(read_safetensors(file))

    scaling = hf.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "none"))
    if kind not in ("none", "default", "linear"):
        raise NotImplementedError(f"rope scaling type {kind!r}")
    n_heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // n_heads
    cfg = Config(
        arch=arch,
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=head_dim,
        norm_eps=hf["rms_norm_eps"],
        rope_base=hf.get("rope_theta", 10000.0),
        rope_dims=head_dim,
        rope_interleaved=False,  # HF checkpoints always use rotate-half (NeoX)
        rope_linear_factor=float(scaling["factor"]) if kind == "linear" else 1.0,
        context_length=hf.get("max_position_embeddings", 0),
    )

    weights = {"tok_embd": raw["model.embed_tokens.weight"][1],
               "out_norm": raw["model.norm.weight"][1]}
    if hf.get("tie_word_embeddings") or "lm_head.weight" not in raw:
        weights["output"] = weights["tok_embd"]
    else:
        weights["output"] = raw["lm_head.weight"][1]
    for i in range(cfg.n_layers):
        for hf_suffix in LAYER_NAMES:
            entry = raw.get(f"model.layers.{i}.{hf_suffix}")
            if entry is not None:
                weights[f"{i}.{hf_suffix}"] = entry[1]

    summary = Counter(dtype for dtype, _ in raw.values())
    return cfg, weights, dict(sorted(summary.items())), files


def load_model(path):
    """Returns (config, float64 weights, dtype summary, weight files)."""
    if os.path.isdir(path):
        cfg, weights, summary, files = load_safetensors_dir(path)
    else:
        cfg, weights, summary, files = load_gguf(path)
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    return cfg, weights, summary, files


# ---------------------------------------------------------------- forward pass

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, positions, cfg):
    """Rotated copy of x [T, heads, head_dim]; positions [T]."""
    n = cfg.rope_dims
    inv_freq = cfg.rope_base ** (-np.arange(0, n, 2, dtype=np.float64) / n)  # [n/2]
    angles = (positions / cfg.rope_linear_factor)[:, None] * inv_freq        # [T, n/2]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    if cfg.rope_interleaved:
        idx_a, idx_b = np.arange(0, n, 2), np.arange(1, n, 2)
    else:
        idx_a, idx_b = np.arange(n // 2), np.arange(n // 2, n)
    a, b = x[..., idx_a], x[..., idx_b]
    out = x.copy()
    out[..., idx_a] = a * cos - b * sin
    out[..., idx_b] = a * sin + b * cos
    return out


def silu(x):
    return x / (1.0 + np.exp(-x))


def forward(cfg, w, tokens, cache):
    """Logits [T, vocab] for `tokens`, which follow the cache's positions.

    cache: list (one per layer) of [k, v] arrays [kv_heads, past, head_dim];
    it is extended in place.
    """
    past = cache[0][0].shape[1]
    T = len(tokens)
    positions = np.arange(past, past + T, dtype=np.float64)
    # causal mask over [query T, key past+T]
    mask = np.arange(past + T)[None, :] > (past + np.arange(T))[:, None]
    group = cfg.n_heads // cfg.n_kv_heads
    x = w["tok_embd"][tokens]  # [T, dim]
    for i in range(cfg.n_layers):
        p = f"{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], cfg.norm_eps)
        q = h @ w[p + "self_attn.q_proj.weight"].T
        k = h @ w[p + "self_attn.k_proj.weight"].T
        v = h @ w[p + "self_attn.v_proj.weight"].T
        if p + "self_attn.q_proj.bias" in w:
            q += w[p + "self_attn.q_proj.bias"]
            k += w[p + "self_attn.k_proj.bias"]
            v += w[p + "self_attn.v_proj.bias"]
        q = rope(q.reshape(T, cfg.n_heads, cfg.head_dim), positions, cfg)
        k = rope(k.reshape(T, cfg.n_kv_heads, cfg.head_dim), positions, cfg)
        v = v.reshape(T, cfg.n_kv_heads, cfg.head_dim)
        cache[i][0] = np.concatenate([cache[i][0], k.transpose(1, 0, 2)], axis=1)
        cache[i][1] = np.concatenate([cache[i][1], v.transpose(1, 0, 2)], axis=1)
        # GQA: query head j reads kv head j // group
        keys = np.repeat(cache[i][0], group, axis=0)    # [heads, S, hd]
        values = np.repeat(cache[i][1], group, axis=0)  # [heads, S, hd]
        scores = q.transpose(1, 0, 2) @ keys.transpose(0, 2, 1) / np.sqrt(cfg.head_dim)
        scores = np.where(mask, -np.inf, scores)         # [heads, T, S]
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        attn = (probs @ values).transpose(1, 0, 2).reshape(T, cfg.n_heads * cfg.head_dim)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T

        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], cfg.norm_eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["out_norm"], cfg.norm_eps)
    return x @ w["output"].T


def empty_cache(cfg):
    empty = np.zeros((cfg.n_kv_heads, 0, cfg.head_dim))
    return [[empty, empty] for _ in range(cfg.n_layers)]


# ------------------------------------------------------------------------- CLI

def g6(values):
    """Floats rounded to 6 significant digits, as a JSON-ready list."""
    return [float(f"{v:.6g}") for v in np.asarray(values).ravel()]


def sha256_of(files):
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def run_case(cfg, w, prompt, n_greedy, top_k):
    cache = empty_cache(cfg)
    logits = forward(cfg, w, np.asarray(prompt, dtype=np.int64), cache)
    last = logits[-1]
    vocab = last.shape[0]
    top = np.argsort(-last, kind="stable")[:top_k]  # ties: lower id first
    case = {"prompt_ids": list(prompt), "top_ids": top.tolist(), "top_values": g6(last[top])}
    if vocab <= FULL_LOGITS_MAX_VOCAB:
        case["last_logits"] = g6(last)
    else:
        probes = np.array([j * vocab // N_PROBES for j in range(N_PROBES)])
        case["probe_ids"] = probes.tolist()
        case["probe_values"] = g6(last[probes])
    case["all_positions_argmax"] = np.argmax(logits, axis=-1).tolist()
    margins = [top2_gap(row) for row in logits]
    greedy = []
    for step in range(n_greedy):
        token = int(np.argmax(last))  # ties: lowest id
        greedy.append(token)
        margins.append(top2_gap(last))
        if step + 1 < n_greedy:
            last = forward(cfg, w, np.array([token]), cache)[-1]
    case["greedy"] = greedy
    # The closest call of any argmax above: a comparison is only meaningful when it exceeds the
    # tolerance of the implementation under test.
    case["min_argmax_margin"] = float(f"{min(margins):.6g}")
    return case


def top2_gap(row):
    """Gap between the two largest logits, relative to the largest magnitude."""
    top2 = np.partition(row, -2)[-2:]
    return float(abs(top2[1] - top2[0]) / max(1.0, float(np.abs(row).max())))


def cmd_logits(args):
    cfg, w, summary, files = load_model(args.model)
    with open(args.cases) as f:
        prompts = json.load(f)["prompts"]
    result = {
        "model": os.path.basename(os.path.normpath(args.model)),
        "model_sha256": sha256_of(files),
        "arch": cfg.arch,
        "dtype_summary": summary,
        "vocab_size": int(w["output"].shape[0]),
        "rope_interleaved": cfg.rope_interleaved,
        "cases": [run_case(cfg, w, p, args.greedy, args.top) for p in prompts],
    }
    with open(args.out, "w") as f:
        json.dump(result, f)


def cmd_dequant(args):
    if os.path.isdir(args.model):
        raw = {}
        for file in sorted(glob.glob(os.path.join(args.model, "*.safetensors"))):
            raw.update(read_safetensors(file))
        dtype, arr = raw[args.tensor]
    else:
        tensor = {t.name: t for t in GGUFReader(args.model).tensors}[args.tensor]
        dtype, arr = tensor.tensor_type.name, gguf_dequant(tensor)
    arr = arr.astype(np.float32)
    rows = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
    result = {
        "tensor": args.tensor,
        "dtype": dtype,
        "shape": list(arr.shape),  # numpy / PyTorch order ([rows, cols])
        # str() of a float32 is its shortest round-tripping decimal
        "rows": [[float(str(v)) for v in row] for row in rows[: args.rows]],
    }
    with open(args.out, "w") as f:
        json.dump(result, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("logits", help="logits, argmaxes and greedy tokens for prompts")
    p.add_argument("--model", required=True, help="GGUF file or HF safetensors directory")
    p.add_argument("--cases", required=True, help='JSON {"prompts": [[ids...], ...]}')
    p.add_argument("--out", required=True)
    p.add_argument("--greedy", type=int, default=32, help="greedy tokens per prompt")
    p.add_argument("--top", type=int, default=64, help="top-K of the last logits")
    p.set_defaults(func=cmd_logits)
    p = sub.add_parser("dequant", help="first rows of one tensor as float32")
    p.add_argument("--model", required=True)
    p.add_argument("--tensor", required=True, help="tensor name as stored in the file")
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, default=4)
    p.set_defaults(func=cmd_dequant)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
