#!/usr/bin/env python3
"""HF transformers baseline for the CUDA backend's benchmark (issue 6).

Runs engine-bench's fixed workload (every request a 64-token prompt and exactly 128 output
tokens; max(2N, 8) requests at N concurrent streams) through transformers' `generate`, on a
model of the same shape as the one engine-bench served, in fp16 with SDPA attention: HF's
usual deployment. transformers has no continuous batching here, so N streams are batches of
N requests run one after another. The weights are random (the device machine has no network
and transformers cannot read Joule's GGUF files without the `gguf` package); speed does not
depend on their values because every request generates exactly 128 tokens.

Energy is measured: NVML's total energy counter (libnvidia-ml through ctypes), read around
each run, whole board.

  python3 engine/benches/hf_baseline.py --shape llama-3.2-1b --concurrency 1,8,32,128 \
      --repeats 3 > hf.jsonl

Prints one JSON object per concurrency level.
"""

import argparse
import ctypes
import json
import statistics
import sys
import time

SHAPES = {
    # HuggingFaceTB/SmolLM2-135M-Instruct (Joule's default model).
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    ),
    # meta-llama/Llama-3.2-1B (engine/examples/random-model.rs writes this shape).
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    ),
}


class Energy:
    """NVML's millijoule counter of one GPU, or None where it cannot be read."""

    def __init__(self, index):
        self.lib = None
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            if lib.nvmlInit_v2() != 0:
                return
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                return
            self.lib, self.handle = lib, handle
            if self.millijoules() is None:
                self.lib = None
        except OSError:
            pass

    def millijoules(self):
        if self.lib is None:
            return None
        mj = ctypes.c_ulonglong()
        if self.lib.nvmlDeviceGetTotalEnergyConsumption(self.handle, ctypes.byref(mj)) != 0:
            return None
        return mj.value


def run_once(model, torch, prompts, batch, output):
    torch.cuda.synchronize()
    start = time.perf_counter()
    produced = 0
    for i in range(0, len(prompts), batch):
        ids = torch.stack(prompts[i : i + batch]).cuda()
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=output,
            min_new_tokens=output,
            do_sample=False,
            pad_token_id=0,
        )
        produced += (out.shape[1] - ids.shape[1]) * ids.shape[0]
    torch.cuda.synchronize()
    return produced, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--device", type=int, default=0)
    a = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(a.seed)
    cfg = LlamaConfig(**SHAPES[a.shape])
    cfg._attn_implementation = "sdpa"
    torch.cuda.set_device(a.device)
    model = LlamaForCausalLM(cfg).to(dtype=torch.float16, device="cuda").eval()
    energy = Energy(a.device)
    # Warm-up: kernels, allocator, cuBLAS handles.
    with torch.inference_mode():
        warm = [torch.randint(1, cfg.vocab_size, (a.prompt,)) for _ in range(2)]
        run_once(model, torch, warm, 2, 8)

    for n in [int(x) for x in a.concurrency.split(",")]:
        requests = max(2 * n, 8)
        prompts = [torch.randint(1, cfg.vocab_size, (a.prompt,)) for _ in range(requests)]
        rates, per_token, watts = [], [], []
        for _ in range(a.repeats):
            e0 = energy.millijoules()
            with torch.inference_mode():
                produced, secs = run_once(model, torch, prompts, n, a.output)
            e1 = energy.millijoules()
            rates.append(produced / secs)
            if e0 is not None and e1 is not None:
                joules = (e1 - e0) / 1000.0
                per_token.append(joules / produced)
                watts.append(joules / secs)
        row = {
            "system": "hf-transformers",
            "transformers": __import__("transformers").__version__,
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(a.device),
            "shape": a.shape,
            "dtype": "float16",
            "concurrency": n,
            "requests": requests,
            "prompt_tokens": a.prompt,
            "output_tokens": a.output,
            "repeats": a.repeats,
            "output_tokens_per_s": statistics.median(rates),
        }
        if per_token:
            row["energy"] = "measured: the GPU's NVML energy counter, whole board, over each run"
            row["joules_per_output_token"] = statistics.median(per_token)
            row["watts"] = statistics.median(watts)
        else:
            row["energy"] = "not measured (NVML has no energy counter here)"
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
