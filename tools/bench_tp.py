#!/usr/bin/env python3
"""Tensor-parallel benchmark: fms-server with NUM_SHARD=1 against NUM_SHARD=N
on this machine, end to end over gRPC (the baseline runs in the same
invocation). Not a test: timings vary.

For each shard count it starts the server on the model, warms it up, then
times (a) one greedy request of --tokens new tokens (per-token latency) and
(b) --batch concurrent requests of --tokens tokens (throughput). Prints a
Markdown table with the ratios against NUM_SHARD=1.

  tools/bench_tp.py --model DIR [--tokenizer FILE] [--shards 1,2] [--batch 8]
                    [--tokens 64] [--dtype float32]

--tokenizer: a tokenizer.model to serve a checkpoint that has none (the
random benchmark checkpoints of tools/bench_model.py); the text is then
meaningless, the arithmetic is not.
"""

import argparse
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from server_harness import free_port, wait_ready  # noqa: E402


def stubs(tmp):
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp}",
                        f"--grpc_python_out={tmp}", str(ROOT / "proto/generation.proto")]) == 0
    sys.path.insert(0, str(tmp))
    import generation_pb2
    import generation_pb2_grpc
    return generation_pb2, generation_pb2_grpc


def model_dir(args, tmp):
    if not args.tokenizer:
        return args.model
    linked = pathlib.Path(tmp) / "model"
    linked.mkdir()
    for f in pathlib.Path(args.model).iterdir():
        (linked / f.name).symlink_to(f.resolve())
    (linked / "tokenizer.model").symlink_to(pathlib.Path(args.tokenizer).resolve())
    return str(linked)


def request(pb, text, tokens):
    return pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text=text)],
        params=pb[0].Parameters(
            method=pb[0].GREEDY,
            stopping=pb[0].StoppingCriteria(max_new_tokens=tokens, min_new_tokens=tokens)))


def measure(pb, model, shards, args):
    process = subprocess.Popen(
        [str(ROOT / "bazel-bin/server/fms-server"), f"--model-name={model}",
         f"--num-shard={shards}", f"--grpc-port={(port := free_port())}",
         f"--port={free_port()}", f"--master-port={free_port()}", f"--dtype-str={args.dtype}",
         "--max-batch-size=64", "--max-sequence-length=512"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        stub = wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
        stub.Generate(request(pb, "warm up", 8))
        start = time.perf_counter()
        stub.Generate(request(pb, "Once upon a time", args.tokens))
        single = time.perf_counter() - start
        with ThreadPoolExecutor(args.batch) as pool:
            start = time.perf_counter()
            list(pool.map(lambda i: stub.Generate(request(pb, f"Story {i}", args.tokens)),
                          range(args.batch)))
            batch = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {"ms_per_token": 1000 * single / args.tokens,
            "batch_tokens_per_s": args.batch * args.tokens / batch}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokenizer")
    parser.add_argument("--shards", default="1,2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pb = stubs(tmp)
        model = model_dir(args, tmp)
        rows = {int(n): measure(pb, model, int(n), args) for n in args.shards.split(",")}
    base = rows[min(rows)]
    print(f"`tools/bench_tp.py --model {pathlib.Path(args.model).name} --shards {args.shards} "
          f"--batch {args.batch} --tokens {args.tokens} --dtype {args.dtype}` on "
          f"{platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n")
    print("| NUM_SHARD | ms/token, 1 request | ratio | tokens/s, "
          f"{args.batch} requests | ratio |\n| --- | --- | --- | --- | --- |")
    for n, r in rows.items():
        print(f"| {n} | {r['ms_per_token']:.1f} | {base['ms_per_token'] / r['ms_per_token']:.2f}x "
              f"| {r['batch_tokens_per_s']:.0f} | "
              f"{r['batch_tokens_per_s'] / base['batch_tokens_per_s']:.2f}x |")


if __name__ == "__main__":
    main()
