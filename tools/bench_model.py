#!/usr/bin/env python3
"""Model benchmark: fms-serve's LlamaModel against transformers on this CPU.

For each config (110M: llama2.c "stories110M" shape; 1.1B: TinyLlama shape;
smollm2: SmolLM2-135M's shape, 30 layers of width 576, the served model) it
writes a random checkpoint once (cached), then in the same run measures:
  * model_bench (C++): prefill and decode tokens/s at batch 1, 8, 32, fp32 and
    bf16, plus a STREAM-style read bandwidth and the decode roofline;
  * transformers LlamaForCausalLM on the same weights and threads: a forward
    for prefill, `generate` with its KV cache for decode.
and prints a Markdown table with the ratios. Not a test: timings vary.

  tools/bench_model.py [--configs 110m,1.1b,smollm2] [--threads 2] [--out results.md]
      [--model-bench PATH]   another build's model_bench (a same-run A/B)
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = {
    "110m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=12, vocab_size=32000,
                 tie_word_embeddings=True),
    "1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                 tie_word_embeddings=False),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                    tie_word_embeddings=True),
}
# Shorter runs for the big model keep the whole benchmark near 15 minutes.
RUNS = {"110m": dict(prompt=128, steps=16), "1.1b": dict(prompt=64, steps=8),
        "smollm2": dict(prompt=128, steps=16)}
BATCHES = [1, 8, 16, 32]


def cache_dir():
    base = os.environ.get("FMS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fms-serve")
    return pathlib.Path(base) / "bench-models"


def checkpoint(name):
    path = cache_dir() / name
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        config = LlamaConfig(max_position_embeddings=2048, rms_norm_eps=1e-5,
                             **CONFIGS[name])
        model = LlamaForCausalLM(config)  # transformers' init: std 0.02
        model.save_pretrained(path)
    return path


MODEL_BENCH = ROOT / "bazel-bin" / "tools" / "model_bench"


def run_ours(path, dtype, threads, run, batches=BATCHES, eager=False, binary=MODEL_BENCH):
    cmd = [str(binary), "--model", str(path), "--dtype", dtype, "--threads", str(threads),
           "--batches", ",".join(map(str, batches)), "--prompt", str(run["prompt"]),
           "--steps", str(run["steps"]), "--eager_baseline", "1" if eager else "0"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return lines[0], {row["batch"]: row for row in lines[1:]}


def run_hf(path, dtype, run):
    """transformers' generate: prefill = generate(1 token); decode = the extra
    time of generate(steps + 1 tokens), so both use its KV cache."""
    model = LlamaForCausalLM.from_pretrained(path, dtype=dtype).eval()

    def generate(ids, new_tokens):
        start = time.perf_counter()
        model.generate(ids, do_sample=False, min_new_tokens=new_tokens,
                       max_new_tokens=new_tokens, pad_token_id=0)
        return time.perf_counter() - start

    rows = {}
    for batch in BATCHES:
        ids = (torch.arange(batch * run["prompt"]).view(batch, run["prompt"]) * 7919) % 30000 + 3
        with torch.inference_mode():
            generate(ids[:, :8], 2)  # Warm-up.
            prefill = generate(ids, 1)
            decode = max(generate(ids, run["steps"] + 1) - prefill, 1e-9)
        rows[batch] = {"prefill_tokens_per_s": batch * run["prompt"] / prefill,
                       "decode_tokens_per_s": batch * run["steps"] / decode}
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="110m,1.1b")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    parser.add_argument("--model-bench", default=str(MODEL_BENCH),
                        help="the model_bench binary to measure (default: this build's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}, threads {args.threads}, "
             f"date {time.strftime('%Y-%m-%d')}", "",
             "| model | dtype | batch | prefill tok/s (ours / HF) | decode tok/s (ours / HF) "
             "| decode vs HF | decode vs roofline | decode vs eager |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for name in args.configs.split(","):
        path = checkpoint(name)
        for dtype in args.dtypes.split(","):
            info, ours = run_ours(path, dtype, args.threads, RUNS[name],
                                  binary=args.model_bench)
            _, eager = run_ours(path, dtype, args.threads, RUNS[name], [16], eager=True,
                                binary=args.model_bench)
            hf = run_hf(path, getattr(torch, dtype), RUNS[name])
            roof = info["roofline_batch1_tokens_per_s"]
            notes.append(f"{name} {dtype}: read bandwidth {info['read_bandwidth_gb_s']:.1f} GB/s, "
                         f"{info['weight_bytes_per_step'] / 1e6:.0f} MB of weights per decode "
                         f"step, batch-1 roofline {roof:.1f} tok/s")
            for batch in BATCHES:
                o, h = ours[batch], hf[batch]
                vs_roof = (f"{o['decode_tokens_per_s'] / roof:.0%}" if batch == 1 else "")
                vs_eager = (f"{o['decode_tokens_per_s'] / eager[16]['decode_tokens_per_s']:.2f}x"
                            if batch in eager else "")
                lines.append(
                    f"| {name} | {dtype} | {batch} | {o['prefill_tokens_per_s']:.0f} / "
                    f"{h['prefill_tokens_per_s']:.0f} | {o['decode_tokens_per_s']:.1f} / "
                    f"{h['decode_tokens_per_s']:.1f} | "
                    f"{o['decode_tokens_per_s'] / h['decode_tokens_per_s']:.2f}x | {vs_roof} | "
                    f"{vs_eager} |")
                print(lines[-1], flush=True)
    text = "\n".join(lines + [""] + [f"* {n}" for n in notes]) + "\n"
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
    sys.exit(main())
