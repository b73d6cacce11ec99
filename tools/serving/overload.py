"""tools/overload: the real fms-server at 4x its sustainable rate (issue 13, item 4).

1. Sustainable rate R: a closed loop of --concurrency unary Generate calls for
   --measure-s seconds; R = calls completed per second. Baseline latency: 5 calls alone.
2. Overload: an open loop of Poisson arrivals at --factor x R for --overload-s seconds,
   each call with a --deadline-s deadline (ghz's default is 20 s). Meanwhile gRPC health
   and HTTP /health are called every 0.2 s, and /metrics' tgi_queue_size every 0.5 s.
3. Recovery: once the arrivals stop and the calls in flight end, 5 calls alone again.

Prints (and writes with --out) the figures docs/reliability.md reports: outcomes by
code, how fast RESOURCE_EXHAUSTED came back, health latency, queue length, latency
before and after. It measures; it does not judge.

    tools/overload --out overload.json
"""

import argparse
import asyncio
import json
import os
import pathlib
import random
import tempfile
import time
import urllib.request

import grpc

from . import servers, stubs
from .soak_checks import percentile

PROMPTS = ["The king went to the river", "Write a haiku about the sea.",
           "Once upon a time", "List three colours:", "The capital of France is"]


def generate_request(pb, rng, max_new_tokens):
    return pb.BatchedGenerationRequest(
        requests=[pb.GenerationRequest(text=rng.choice(PROMPTS))],
        params=pb.Parameters(method=pb.GREEDY,
                             stopping=pb.StoppingCriteria(max_new_tokens=max_new_tokens,
                                                          min_new_tokens=max_new_tokens)))


async def timed_call(stub, request, deadline_s):
    """(gRPC code name, seconds) of one unary Generate."""
    start = time.perf_counter()
    try:
        await stub.Generate(request, timeout=deadline_s)
        code = "OK"
    except grpc.aio.AioRpcError as e:
        code = e.code().name
    return code, time.perf_counter() - start


async def closed_loop(stub, pb, rng, concurrency, seconds, args):
    done, stop_at = [], time.perf_counter() + seconds

    async def worker():
        while time.perf_counter() < stop_at:
            done.append(await timed_call(stub, generate_request(pb, rng, args.max_new_tokens),
                                         args.deadline_s))
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ok = sum(1 for code, _ in done if code == "OK")
    return ok / (time.perf_counter() - start)


async def alone(stub, pb, rng, args, n=5):
    return [(await timed_call(stub, generate_request(pb, rng, args.max_new_tokens),
                              args.deadline_s))[1] for _ in range(n)]


async def poll_health(pb_all, target, http_port, stop, grpc_s, http_s, queue):
    pb_health, health_grpc = pb_all[2], pb_all[3]
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_grpc.HealthStub(channel)
        tick = 0
        while not stop.is_set():
            start = time.perf_counter()
            try:
                await health.Check(pb_health.HealthCheckRequest(service=""), timeout=5)
                grpc_s.append(time.perf_counter() - start)
            except grpc.aio.AioRpcError:
                grpc_s.append(float("inf"))
            start = time.perf_counter()
            text = await asyncio.to_thread(http_get, http_port, "/health" if tick % 2 else "/metrics")
            if tick % 2:
                http_s.append(time.perf_counter() - start if text is not None else float("inf"))
            elif text is not None:
                for line in text.splitlines():
                    if line.startswith("tgi_queue_size "):
                        queue.append(float(line.split()[1]))
            tick += 1
            await asyncio.sleep(0.2)


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return None


async def overload(target, http_port, args):
    pb_all = stubs.load()
    pb, pb_grpc = pb_all[0], pb_all[1]
    rng = random.Random(args.seed)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        await alone(stub, pb, rng, args, n=2)  # Warm-up.
        before = await alone(stub, pb, rng, args)
        rate = await closed_loop(stub, pb, rng, args.concurrency, args.measure_s, args)
        stop = asyncio.Event()
        grpc_s, http_s, queue = [], [], []
        poller = asyncio.create_task(poll_health(pb_all, target, http_port, stop, grpc_s,
                                                 http_s, queue))
        offered = args.rate or args.factor * rate
        calls = []
        start = time.perf_counter()
        while time.perf_counter() - start < args.overload_s:
            calls.append(asyncio.create_task(timed_call(
                stub, generate_request(pb, rng, args.max_new_tokens), args.deadline_s)))
            await asyncio.sleep(rng.expovariate(offered))
        outcomes = await asyncio.gather(*calls)
        drained_s = time.perf_counter() - start - args.overload_s
        stop.set()
        await poller
        after = await alone(stub, pb, rng, args)
    by_code = {}
    for code, seconds in outcomes:
        by_code.setdefault(code, []).append(seconds)
    return {
        "sustainable_rate_per_s": round(rate, 2), "offered_rate_per_s": round(args.rate or args.factor * rate, 2),
        "calls": len(outcomes),
        "outcomes": {code: {"count": len(s), "p50_s": round(percentile(s, 50), 3),
                            "max_s": round(max(s), 3)} for code, s in sorted(by_code.items())},
        "grpc_health_s": {"p50": percentile(grpc_s, 50), "max": max(grpc_s, default=None)},
        "http_health_s": {"p50": percentile(http_s, 50), "max": max(http_s, default=None)},
        "queue_max": max(queue, default=None),
        "drained_after_s": round(drained_s, 1),
        "latency_alone_s": {"before_p50": percentile(before, 50),
                            "after_p50": percentile(after, 50)},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tools/overload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("FMS_SMOLLM2_DIR"))
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop for R")
    parser.add_argument("--measure-s", type=float, default=30)
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--rate", type=float, help="offer this rate instead of factor x R (A/B)")
    parser.add_argument("--overload-s", type=float, default=60)
    parser.add_argument("--deadline-s", type=float, default=20.0)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--server-bin", help="another fms-server (default: bazel-bin's), for A/B")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="fms-overload-"))
    grpc_port, http_port = servers.free_port(), servers.free_port()
    command, env = servers.fms_command(args.model, "bfloat16", grpc_port, http_port,
                                       args.concurrency, 512)
    env = {**env, **dict(e.split("=", 1) for e in args.env)}
    if args.server_bin:
        command[0] = args.server_bin
    server = servers.Server("fms-serve", command, env, grpc_port, workdir / "server.log").start()
    try:
        figures = asyncio.run(overload(server.target, http_port, args))
    finally:
        server.stop()
    figures["server_env"] = env
    print(json.dumps(figures, indent=1))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")
    return 0
