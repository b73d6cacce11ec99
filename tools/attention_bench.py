"""Decode attention on CPU as model/paged_attention.cc runs it: PyTorch's
scaled_dot_product_attention over [B, heads, 1, d] queries and gathered
[B, kv_heads, keys, d] keys/values with a padding mask, in bf16 directly and with
the inputs converted to fp32 first (conversions included). Default shapes are
SmolLM2-135M's (9 heads, 3 KV heads, d=64) at batch 16 and ~160 keys. It runs
with the worker's malloc settings (model/malloc_tuning.cc: no mmap for large
buffers); without them the fp32 case's fresh 2 MB buffers are mmapped and
page-faulted on every call, and its time varies 4x between runs.

    python tools/attention_bench.py [--batch 16] [--keys 160] [--threads 2]
"""

import argparse
import os
import sys
import time

import torch


def timed(fn, repeats):
    for _ in range(20):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e6


def main():
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # As the worker's mallopt calls.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 30),
                   MALLOC_TRIM_THRESHOLD_=str(1 << 30))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--keys", type=int, default=160)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b, h, kvh, n, d = args.batch, args.heads, args.kv_heads, args.keys, args.dim
    sdpa = torch.nn.functional.scaled_dot_product_attention
    q = torch.randn(b, h, 1, d, dtype=torch.bfloat16)
    k = torch.randn(b, kvh, n, d, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    mask = torch.ones(b, 1, 1, n, dtype=torch.bool)
    mask[: b // 2, :, :, -n // 4:] = False  # Half the sequences are shorter.
    reference = sdpa(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True)
    cases = {
        "bf16 sdpa": lambda: sdpa(q, k, v, attn_mask=mask, enable_gqa=True),
        "fp32 sdpa on converted bf16 (+ conversions)": lambda: sdpa(
            q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True).bfloat16(),
    }
    print(f"batch {b}, heads {h}/{kvh}, keys {n}, dim {d}, threads {args.threads}")
    for name, fn in cases.items():
        error = (fn().float() - reference).abs().max().item()
        print(f"{name}: {timed(fn, args.repeats):.1f} us per layer, "
              f"max |error| vs fp32 {error:.5f}")


if __name__ == "__main__":
    main()
