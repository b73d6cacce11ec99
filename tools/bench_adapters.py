#!/usr/bin/env python3
"""The cost of LoRA (issue 15): decode tokens/s of a batch of 16 sequences on
the real default model (SmolLM2-135M-Instruct, tools/fetch_model) with no
adapter, every sequence on one rank-16 LoRA, and the 16 spread over four
rank-16 LoRAs (all seven projections), in fp32 and bf16; plus the time
LlamaModel takes to load one adapter, and the extra latency of a request that
is the first to use an adapter, through fms-server (bf16). The adapters are
made with peft.

Runs //tools:model_bench (the model without the server: the step loop is
issue 14's) in rounds A B C A B C ..., so that drift of the machine shows; prints
a Markdown table with the ratios to the base model. Not a test.

  tools/bench_adapters.py [--model DIR] [--rounds 2] [--steps 32]
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from serving import servers, stubs  # noqa: E402
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_loras(model_dir, out, count, rank):
    dirs = []
    for i in range(count):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=PROJECTIONS,
                            init_lora_weights=False, task_type=TaskType.CAUSAL_LM)
        path = out / f"lora{i}"
        get_peft_model(model, config).save_pretrained(path)
        dirs.append(str(path))
    return dirs


def bench(binary, model_dir, dtype, adapters, args):
    command = [str(binary), "--model", str(model_dir), "--dtype", dtype, "--threads",
               str(os.cpu_count()), "--batches", "16", "--prompt", "128", "--steps",
               str(args.steps)]
    if adapters:
        command += ["--adapters", ",".join(adapters)]
    lines = [json.loads(line) for line in
             subprocess.run(command, check=True, capture_output=True, text=True).stdout.split("\n")
             if line.strip()]
    loads = [line["load_ms"] for line in lines if "load_ms" in line]
    row = [line for line in lines if "decode_tokens_per_s" in line][0]
    return row["decode_tokens_per_s"], row["decode_step_ms"], loads


def first_use_ms(model_dir, store, adapters, log):
    """Per adapter: a 1-token Generate that loads it, minus the same call again."""
    pb = stubs.load()
    port = servers.free_port()
    command, env = servers.fms_command(model_dir, "bfloat16", port, servers.free_port(), 16, 512)
    server = servers.Server("fms-serve", command + [f"--adapter-cache={store}"], env, port, log)
    server.start()
    extra = []
    try:
        import grpc
        with grpc.insecure_channel(server.target) as channel:
            stub = pb[1].GenerationServiceStub(channel)
            for adapter in adapters:
                request = pb[0].BatchedGenerationRequest(
                    requests=[pb[0].GenerationRequest(text="The capital of France is")],
                    adapter_id=adapter,
                    params=pb[0].Parameters(stopping=pb[0].StoppingCriteria(max_new_tokens=1)))
                times = []
                for _ in range(2):
                    start = time.perf_counter()
                    stub.Generate(request, timeout=120)
                    times.append(time.perf_counter() - start)
                extra.append(1000 * (times[0] - times[1]))
    finally:
        server.stop()
    return extra


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=os.environ.get("FMS_SMOLLM2_DIR"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    if not args.model:
        args.model = subprocess.run([str(ROOT / "tools" / "fetch_model")], check=True,
                                    capture_output=True, text=True).stdout.split()[-1]
    subprocess.run(["bazel", "build", "-c", "opt", "//tools:model_bench"], check=True,
                   cwd=ROOT, capture_output=True)
    binary = ROOT / "bazel-bin" / "tools" / "model_bench"
    with tempfile.TemporaryDirectory() as tmp:
        loras = make_loras(args.model, pathlib.Path(tmp), 4, 16)
        cases = {"base": [], "1 LoRA": loras[:1], "4 LoRAs": loras}
        served = first_use_ms(args.model, tmp, [pathlib.Path(d).name for d in loras],
                              pathlib.Path(tmp) / "server.log")
        results = {}
        for dtype in ("float32", "bfloat16"):
            for _ in range(args.rounds):
                for name, adapters in cases.items():
                    results.setdefault((dtype, name), []).append(
                        bench(binary, args.model, dtype, adapters, args))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"batch 16, 128-token prompts, {args.steps} decode steps, rank 16 on all 7 projections")
    # This VM's step times swing by 30 % between runs of the same binary: the
    # fastest round (least disturbed) is the figure compared; the median is shown too.
    print("\n| dtype | adapters | decode tok/s (rounds) | median | best | best / base best "
          "| best step ms |")
    print("|---|---|---|---|---|---|---|")
    for dtype in ("float32", "bfloat16"):
        base = max(r[0] for r in results[(dtype, "base")])
        for name in cases:
            runs = results[(dtype, name)]
            median = statistics.median(r[0] for r in runs)
            best = max(r[0] for r in runs)
            print(f"| {dtype} | {name} | {', '.join(f'{r[0]:.1f}' for r in runs)} | "
                  f"{median:.1f} | {best:.1f} | {best / base:.2f}x | "
                  f"{min(r[1] for r in runs):.1f} |")
    loads = [ms for (dtype, _), runs in results.items() for r in runs for ms in r[2]]
    print(f"\nLoRA load (LlamaModel::LoadAdapter, rank 16, all projections, fp32 and bf16): "
          f"median {statistics.median(loads):.1f} ms, max {max(loads):.1f} ms over {len(loads)} loads")
    print(f"First request to use an adapter, through fms-server (bf16, 1 token), minus the "
          f"same request again: {', '.join(f'{ms:.0f}' for ms in served)} ms")


if __name__ == "__main__":
    main()
