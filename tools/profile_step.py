#!/usr/bin/env python3
"""Where one served decode step's time goes (issue 14, item 1): serves the
default model (SmolLM2-135M-Instruct) with fms-server, streams one request of
the serving benchmark's fixed shape (a 101-token prompt, then --tokens greedy
tokens) at concurrency 1, and splits the steps between its first and last
token by fms_step_phase_seconds (rank 0's own account: plan decode, hand-off
to the compute thread, plan check and batch, forward with logits to the host,
sampling, result encode; "rpc" is the rest of the batcher's step time: the
unary RPC both ways and the front end's encode and decode). Then runs
model_bench on the same weights (batch 1, same prompt length) for the model's
own decode step. Prints a Markdown table per dtype. Not a test.

With --ttft it splits a c=1 request's time to first token instead: --requests
requests of the same shape, each with a distinct first line (no prefix-cache
hit) and one token, one at a time; per request the client's TTFT against the
one prefill step's phases.

  tools/profile_step.py [--model DIR] [--dtypes bfloat16,float32] [--tokens 200] [--rounds 3]
  tools/profile_step.py --ttft [--requests 40] [--model DIR] [--dtypes ...]

FMS_BIN_DIR: binaries of another build (default bazel-bin), as in tools/serving.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from serving import servers, stubs  # noqa: E402

PHASES = ["decode", "wait", "prepare", "forward", "sample", "encode", "rpc"]
# The serving benchmark's fixed shape (deploy/ghz/bench_fixed.json's data).
PROMPT = json.loads((ROOT / "deploy" / "ghz" / "data" / "bench_fixed.json").read_text())[0]
PROMPT_TEXT = PROMPT["request"]["text"]


def phase_sums(http_port):
    """{phase: (sum seconds, count)} from fms_step_phase_seconds, and the step count."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    sums = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            prefix = f"fms_step_phase_seconds_{kind}{{phase=\""
            if line.startswith(prefix):
                phase = line[len(prefix):].split('"', 1)[0]
                sums.setdefault(phase, {})[kind] = float(line.rsplit(" ", 1)[1])
    return sums


def serve_once(pb, model, dtype, tokens, log):
    port, http = servers.free_port(), servers.free_port()
    command, env = servers.fms_command(model, dtype, port, http, 16, 2048)
    server = servers.Server(f"fms-serve {dtype}", command, env, port, log).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb[1].GenerationServiceStub(channel)
            request = pb[0].SingleGenerationRequest(
                request=pb[0].GenerationRequest(text=PROMPT_TEXT),
                params=pb[0].Parameters(stopping=pb[0].StoppingCriteria(
                    max_new_tokens=tokens, min_new_tokens=tokens)))
            first = last = None
            for message in stub.GenerateStream(request, timeout=600):
                if message.generated_token_count == 1:
                    first, before = time.perf_counter(), phase_sums(http)
                last = time.perf_counter()
            after = phase_sums(http)
    finally:
        server.stop()
    steps = after["forward"]["count"] - before["forward"]["count"]
    per_step = {p: 1e3 * (after[p]["sum"] - before[p]["sum"]) / steps for p in PHASES}
    return per_step, 1e3 * (last - first) / (tokens - 1)


def serve_ttft(pb, model, dtype, requests, log):
    """[(client TTFT ms, {phase: ms})] for `requests` one-token requests at c=1."""
    port, http = servers.free_port(), servers.free_port()
    command, env = servers.fms_command(model, dtype, port, http, 16, 2048)
    server = servers.Server(f"fms-serve {dtype}", command, env, port, log).start()
    out = []
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb[1].GenerationServiceStub(channel)
            for i in range(requests):
                # The serving benchmark's --unique-prompts line: no prefix-cache hit.
                request = pb[0].BatchedGenerationRequest(
                    requests=[pb[0].GenerationRequest(text=f"Request {i}.\n{PROMPT_TEXT}")],
                    params=pb[0].Parameters(stopping=pb[0].StoppingCriteria(max_new_tokens=1)))
                before = phase_sums(http)
                start = time.perf_counter()
                stub.Generate(request, timeout=600)
                ttft = 1e3 * (time.perf_counter() - start)
                # The batcher records a step's phases after its tokens went out.
                deadline = time.monotonic() + 5
                while True:
                    after = phase_sums(http)
                    steps = after["forward"]["count"] - before["forward"]["count"]
                    if steps >= 1 or time.monotonic() > deadline:
                        break
                    time.sleep(0.005)
                assert steps == 1, f"{steps} steps for one prompt"
                out.append((ttft, {p: 1e3 * (after[p]["sum"] - before[p]["sum"])
                                   for p in PHASES}))
    finally:
        server.stop()
    return out


def print_ttft(dtype, rows):
    rows = rows[2:]  # The first requests warm the server's paths up.
    ttft = statistics.median(r[0] for r in rows)
    med = {p: statistics.median(r[1][p] for r in rows) for p in PHASES}
    print(f"\n{dtype}: {len(rows)} requests, TTFT p50 {ttft:.2f} ms\n")
    print("| phase of the prefill step | ms (p50) | share of TTFT |")
    print("|---|---|---|")
    for p in PHASES:
        print(f"| {p} | {med[p]:.3f} | {100 * med[p] / ttft:.1f} % |")
    rest = ttft - sum(med.values())
    print(f"| outside the step (client, front end, queue) | {rest:.3f} | {100 * rest / ttft:.1f} % |")


def model_step_ms(model, dtype):
    bin_dir = pathlib.Path(os.environ.get("FMS_BIN_DIR") or ROOT / "bazel-bin")
    out = subprocess.run([str(bin_dir / "tools" / "model_bench"), "--model", str(model),
                          "--dtype", dtype, "--threads", str(os.cpu_count()), "--batches", "1",
                          "--prompt", "101", "--steps", "64"],
                         check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if "decode_step_ms" in line]
    return rows[0]["decode_step_ms"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=os.environ.get("FMS_SMOLLM2_DIR"))
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttft", action="store_true", help="split TTFT, not a decode step")
    parser.add_argument("--requests", type=int, default=40, help="with --ttft")
    args = parser.parse_args()
    if not args.model:
        args.model = subprocess.run([str(ROOT / "tools" / "fetch_model")], check=True,
                                    capture_output=True, text=True).stdout.split()[-1]
    pb = stubs.load()
    shape = (f"{args.requests} one-token requests at c=1" if args.ttft else
             f"{args.tokens} tokens a stream, {args.rounds} rounds (served, then model_bench); "
             "medians of the rounds")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cpus, {shape}")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes.split(","):
            if args.ttft:
                print_ttft(dtype, serve_ttft(pb, args.model, dtype, args.requests,
                                             pathlib.Path(tmp) / "server.log"))
                continue
            served, itl, bench = [], [], []
            for _ in range(args.rounds):
                per_step, gap = serve_once(pb, args.model, dtype, args.tokens,
                                           pathlib.Path(tmp) / "server.log")
                served.append(per_step)
                itl.append(gap)
                bench.append(model_step_ms(args.model, dtype))
            med = {p: statistics.median(s[p] for s in served) for p in PHASES}
            step = sum(med.values())
            gap, model = statistics.median(itl), statistics.median(bench)
            print(f"\n{dtype}: served inter-token gap {gap:.2f} ms (rounds: "
                  f"{', '.join(f'{g:.2f}' for g in itl)}); model_bench decode step {model:.2f} ms "
                  f"({', '.join(f'{b:.2f}' for b in bench)}); gap / model {gap / model:.2f}x\n")
            print("| phase | ms per step | share of the step |")
            print("|---|---|---|")
            for p in PHASES:
                print(f"| {p} | {med[p]:.3f} | {100 * med[p] / step:.1f} % |")
            print(f"| step (sum) | {step:.3f} | |")
            print(f"| between steps (gap - step) | {gap - step:.3f} | |")


if __name__ == "__main__":
    main()
