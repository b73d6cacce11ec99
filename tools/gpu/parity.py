#!/usr/bin/env python3
"""Parity of the CMake-built llama_probe with transformers on one device.

Makes a random LLaMa (GQA, 4 layers) with transformers, saves it in bf16, and
compares full prefill logits of ragged-length prompts: bf16 against
transformers in bf16, fp32 against transformers in fp32, both on --device.
Also reports how many of 32 greedy tokens agree (bf16 on a random model has
near-ties, so that figure is reported, not asserted). Prints one JSON line per
check; exits 1 when a bound is missed.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

BOUNDS = {"bfloat16": 2e-2, "float32": 1e-3}  # of max |logit|
LENGTHS = [1, 2, 17, 128, 500]


def probe(binary, request):
    result = subprocess.run([binary], input=json.dumps(request), text=True,
                            capture_output=True)
    if result.returncode != 0:
        sys.exit(f"llama_probe failed: {result.stderr}")
    return json.loads(result.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--probe", required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                         num_attention_heads=16, num_key_value_heads=4, vocab_size=4096,
                         max_position_embeddings=2048, rms_norm_eps=1e-5,
                         initializer_range=0.08, tie_word_embeddings=False)
    gen = torch.Generator().manual_seed(1)
    prompts = [[1] + torch.randint(3, 4096, (n - 1,), generator=gen).tolist() for n in LENGTHS]
    failed = False
    kept = {}  # (who, dtype) -> logits rows of every prompt, for the report below.
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = pathlib.Path(tmp) / "model"
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(model_dir)
        for dtype in ("bfloat16", "float32"):
            hf = LlamaForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
            hf = hf.to(args.device).eval()
            out = pathlib.Path(tmp) / f"{dtype}.bin"
            steps = [{"sequences": [{"tokens": p, "blocks": list(range(32)),
                                     "all_logits": True}]} for p in prompts]
            meta = probe(args.probe, {"model": str(model_dir), "dtype": dtype,
                                      "device": args.device, "num_blocks": 32,
                                      "steps": steps, "out": str(out)})
            ours = torch.from_numpy(np.fromfile(out, dtype=np.float32))
            ours = ours.view(-1, meta["vocab"])
            worst, row, scale = 0.0, 0, 0.0
            for p in prompts:
                with torch.no_grad():
                    ref = hf(torch.tensor([p], device=args.device)).logits[0].float().cpu()
                mine = ours[row:row + len(p)]
                row += len(p)
                kept.setdefault(("ours", dtype), []).append(mine)
                kept.setdefault(("transformers", dtype), []).append(ref)
                err = ((mine - ref).abs().max() / ref.abs().max()).item()
                if not (mine.isfinite().all() and ref.isfinite().all()) or err != err:
                    err = float("inf")  # NaN would slip through max() below.
                worst = max(worst, err)
                scale = max(scale, ref.abs().max().item())
            ok = worst <= BOUNDS[dtype]
            failed |= not ok
            print(json.dumps({"check": f"prefill logits {dtype} vs transformers",
                              "device": args.device, "lengths": LENGTHS,
                              "max_abs_logit": scale,
                              "max_err_over_max_logit": worst, "bound": BOUNDS[dtype],
                              "ok": ok}), flush=True)
            if dtype == "bfloat16":
                with torch.no_grad():
                    ref_tokens = hf.generate(torch.tensor([prompts[2]], device=args.device),
                                             max_new_tokens=32, do_sample=False,
                                             min_new_tokens=32)[0, len(prompts[2]):].tolist()
                mine_tokens = probe(args.probe, {
                    "model": str(model_dir), "dtype": dtype, "device": args.device,
                    "num_blocks": 32, "generate": {"prompts": [prompts[2]],
                                                   "max_new_tokens": 32}})["tokens"][0]
                same = next((i for i, (a, b) in enumerate(zip(ref_tokens, mine_tokens))
                             if a != b), len(ref_tokens))
                print(json.dumps({"check": "greedy bf16 vs transformers (reported)",
                                  "identical_leading_tokens": same, "of": 32}), flush=True)
            del hf
    # Which bf16 is closer to the fp32 model: ours or transformers'? (reported)
    truth = kept[("transformers", "float32")]
    report = {"check": "bf16 vs the fp32 model, per prompt length (reported)",
              "lengths": LENGTHS}
    for who in ("ours", "transformers"):
        report[who] = [round(((a - b).abs().max() / b.abs().max()).item(), 4)
                       for a, b in zip(kept[(who, "bfloat16")], truth)]
    print(json.dumps(report), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
