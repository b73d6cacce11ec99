#!/usr/bin/env python3
"""Prefix caching's effect on time to first token (issue 14, item 5), through
fms-server on the real default model (SmolLM2-135M-Instruct): a chat system
prompt with few-shot examples of about 1,000 tokens, then a short question.

Each round sends a cold request (a fresh session line at the very start, so no
block of it can be cached) and then a warm one (the same prefix, another
question). TTFT is the time from sending a GenerateStream to its first message
with a generated token. Servers with ENABLE_PREFIX_CACHING on and off, in
bf16 and fp32, one after the other on this machine; the "off" server is the
baseline (its warm requests must cost what its cold ones do). Prints a
Markdown table. Not a test.

  tools/bench_prefix_cache.py [--model DIR] [--rounds 8] [--dtypes bfloat16,float32]
"""

import argparse
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from serving import servers, stubs  # noqa: E402

SYSTEM = ("You are the support assistant of a public library. Be brief, polite and exact. "
          "Never invent opening hours or fees; when unsure, point the reader to the front desk. ")
EXAMPLES = [("How long can I keep a book?", "Three weeks; you can renew it twice online."),
            ("Do you have study rooms?", "Yes, four rooms on the second floor, booked at the desk."),
            ("Can I print documents?", "Yes, black and white at ten cents a page, colour at fifty."),
            ("Is there wifi?", "Yes, the network is Library-Guest and needs no password."),
            ("Can children get a card?", "Yes, from age six with a parent's signature.")]
QUESTIONS = ["Are dogs allowed inside?", "Where do I return a laptop?",
             "Can I borrow a museum pass?", "Do you sell old books?"]


def prefix_text(pb, stub, target_tokens):
    """The system prompt and as many few-shot rounds as reach `target_tokens`."""
    text, i = SYSTEM, 0
    while True:
        q, a = EXAMPLES[i % len(EXAMPLES)]
        text += f"\nExample {i + 1}. Reader: {q}\nAssistant: {a}"
        i += 1
        request = pb[0].BatchedTokenizeRequest(requests=[pb[0].TokenizeRequest(text=text)])
        if stub.Tokenize(request, timeout=30).responses[0].token_count >= target_tokens:
            return text


def ttft_ms(pb, stub, text):
    request = pb[0].SingleGenerationRequest(
        request=pb[0].GenerationRequest(text=text),
        params=pb[0].Parameters(stopping=pb[0].StoppingCriteria(max_new_tokens=2)))
    start = time.perf_counter()
    for message in stub.GenerateStream(request, timeout=300):
        if message.generated_token_count > 0:
            return 1000 * (time.perf_counter() - start)
    raise RuntimeError("no token")


def run(pb, model, dtype, caching, rounds, log):
    port = servers.free_port()
    command, env = servers.fms_command(model, dtype, port, servers.free_port(), 16, 2048)
    server = servers.Server(f"fms-serve {dtype}", command + [
        f"--enable-prefix-caching={'true' if caching else 'false'}"], env, port, log)
    server.start()
    cold, warm, tokens = [], [], 0
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb[1].GenerationServiceStub(channel)
            prefix = prefix_text(pb, stub, 1000)
            ttft_ms(pb, stub, "Warm-up.")
            for r in range(rounds):
                session = f"Session {uuid.uuid4().hex[:8]}.\n{prefix}\nReader: "
                first = session + QUESTIONS[r % len(QUESTIONS)]
                request = pb[0].BatchedTokenizeRequest(requests=[pb[0].TokenizeRequest(text=first)])
                tokens = stub.Tokenize(request, timeout=30).responses[0].token_count
                cold.append(ttft_ms(pb, stub, first))
                warm.append(ttft_ms(pb, stub, session + QUESTIONS[(r + 1) % len(QUESTIONS)]))
    finally:
        server.stop()
    return cold, warm, tokens


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=os.environ.get("FMS_SMOLLM2_DIR"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    args = parser.parse_args()
    if not args.model:
        args.model = subprocess.run([str(ROOT / "tools" / "fetch_model")], check=True,
                                    capture_output=True, text=True).stdout.split()[-1]
    pb = stubs.load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes.split(","):
            for caching in (True, False):
                cold, warm, tokens = run(pb, args.model, dtype, caching, args.rounds,
                                         pathlib.Path(tmp) / "server.log")
                rows.append((dtype, caching, cold, warm, tokens))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.rounds} rounds")
    print("\n| dtype | prefix caching | prompt tokens | cold TTFT ms p50 (min-max) "
          "| warm TTFT ms p50 (min-max) | warm / cold (p50) |")
    print("|---|---|---|---|---|---|")
    for dtype, caching, cold, warm, tokens in rows:
        c, w = statistics.median(cold), statistics.median(warm)
        print(f"| {dtype} | {'on' if caching else 'off'} | {tokens} | {c:.0f} "
              f"({min(cold):.0f}-{max(cold):.0f}) | {w:.0f} ({min(warm):.0f}-{max(warm):.0f}) "
              f"| {w / c:.3f} |")


if __name__ == "__main__":
    main()
