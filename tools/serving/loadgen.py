"""tools/loadgen: a streaming latency client for fmaas.GenerationService.

ghz times whole calls; this times the tokens inside a GenerateStream call:
  * TTFT: from sending the request to the first message that carries a generated token;
  * ITL: every gap between messages that carry generated tokens (a message that carries
    k > 1 new tokens counts its gap as k gaps of gap/k);
  * generated and input token counts, per request.
Load is a closed loop at concurrency C, or an open loop of Poisson arrivals at rate R;
N requests in all after W warm-up requests (sent one at a time, not counted). The call
data come from a ghz configuration file (deploy/ghz/*.json), round-robin as ghz sends them.

    tools/loadgen run --config deploy/ghz/generate_stream.json -c 8 -n 64 --out r.json
    tools/loadgen plot --out serving.png r1.json r2.json ...
"""

import argparse
import asyncio
import json
import random
import sys
import time

import grpc
from tqdm import tqdm

from . import report, stubs, workload


async def one_stream(stub, request, timeout_s):
    """Sends one GenerateStream request; returns its record."""
    record = {"input_tokens": 0, "generated_tokens": 0, "ttft_ms": None, "itl_ms": [],
              "e2e_ms": None, "error": None, "stop_reason": None}
    start = time.perf_counter()
    last, count = None, 0
    try:
        async for message in stub.GenerateStream(request, timeout=timeout_s):
            now = time.perf_counter()
            if message.input_token_count:
                record["input_tokens"] = message.input_token_count
            new = message.generated_token_count - count
            if new > 0:
                if last is None:
                    record["ttft_ms"] = (now - start) * 1e3
                    new -= 1
                gap = (now - (last if last is not None else now)) * 1e3
                record["itl_ms"] += [gap / new] * new if new > 0 else []
                last, count = now, message.generated_token_count
            if message.stop_reason:
                record["stop_reason"] = message.stop_reason
    except grpc.aio.AioRpcError as e:
        record["error"] = f"{e.code().name}: {e.details()}"
    record["generated_tokens"] = count
    record["e2e_ms"] = (time.perf_counter() - start) * 1e3
    return record


def unique(request, i):
    """`request` with a line naming it first: no block of its prompt can be a prefix-cache
    hit, so a fixed prompt measures prefill on every call (fms-serve caches by default, as
    vLLM V1 does)."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.request.text = f"Request {i}.\n{copy.request.text}"
    return copy


async def run_load(target, requests, n, concurrency=None, rate=None, warmup=0,
                   timeout_s=600.0, seed=0, progress=True, unique_prompts=False):
    """Returns (records, wall seconds). Exactly one of concurrency and rate is set."""
    pb, pb_grpc = stubs.load()[:2]
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        def request(i):
            r = requests[i % len(requests)]
            return unique(r, i) if unique_prompts else r

        for i in range(warmup):
            await one_stream(stub, request(n + i), timeout_s)
        records = [None] * n
        bar = tqdm(total=n, unit="req", disable=not progress, mininterval=1.0,
                   file=sys.stderr, desc=f"{target} " +
                   (f"c={concurrency}" if concurrency else f"rate={rate}/s"))

        async def send(i):
            records[i] = await one_stream(stub, request(i), timeout_s)
            bar.update(1)

        start = time.perf_counter()
        if concurrency:
            next_index = iter(range(n))

            async def worker():
                for i in next_index:
                    await send(i)
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            rng = random.Random(seed)
            tasks = []
            for i in range(n):
                tasks.append(asyncio.create_task(send(i)))
                await asyncio.sleep(rng.expovariate(rate))
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
        bar.close()
    return records, wall


def run_main(args):
    config = workload.read_config(args.config)
    target = workload.resolve_target(config.get("host"), args.host)
    requests = workload.stream_requests(config, exact_tokens=args.exact_tokens)
    if args.greedy:
        pb = stubs.load()[0]
        for r in requests:
            r.params.method = pb.GREEDY
            r.params.ClearField("sampling")
    n = args.n or int(config.get("total", 200))
    concurrency = None if args.rate else (args.concurrency or int(config.get("concurrency", 1)))
    records, wall = asyncio.run(run_load(
        target, requests, n, concurrency=concurrency, rate=args.rate, warmup=args.warmup,
        timeout_s=args.timeout, seed=args.seed, progress=not args.quiet,
        unique_prompts=args.unique_prompts))
    result = {"label": args.label or target, "target": target, "config": args.config,
              "call": "GenerateStream", "concurrency": concurrency, "rate": args.rate,
              "exact_tokens": args.exact_tokens, "greedy": args.greedy,
              "unique_prompts": args.unique_prompts,
              "summary": report.summarize(records, wall), "records": records}
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0 if not result["summary"]["errors"] else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tools/loadgen", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="send load, print the summary, write the records")
    run.add_argument("--config", required=True, help="a ghz JSON config (call and data)")
    run.add_argument("--host", help="HOST:PORT to load; needed for any non-loopback host")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("-c", "--concurrency", type=int, help="closed loop: requests in flight")
    mode.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second")
    run.add_argument("-n", type=int, help="requests to time (default: the config's total)")
    run.add_argument("--warmup", type=int, default=2, help="untimed requests sent first")
    run.add_argument("--exact-tokens", action="store_true",
                     help="min_new_tokens = max_new_tokens, no stop sequences")
    run.add_argument("--greedy", action="store_true", help="greedy decoding for every request")
    run.add_argument("--unique-prompts", action="store_true",
                     help="a line naming each request before its text: no prefix-cache hits")
    run.add_argument("--timeout", type=float, default=600.0, help="deadline of each call (s)")
    run.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    run.add_argument("--label", help="name of the server in reports and plots")
    run.add_argument("--out", help="write the summary and per-request records here (JSON)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    plot = sub.add_parser("plot", help="throughput against p90 TTFT and ITL, a line a label")
    plot.add_argument("--out", required=True, help="the PNG to write")
    plot.add_argument("--title")
    plot.add_argument("results", nargs="+", help="JSON files written by run --out")
    args = parser.parse_args(argv)
    try:
        if args.command == "plot":
            report.plot(args.results, args.out, args.title)
            return 0
        return run_main(args)
    except workload.WorkloadError as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 2
