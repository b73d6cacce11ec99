"""tools/soak: a soak with faults against the real fms-server (issue 13).

Runs fms-server (a tensor-parallel group of --shards workers on the default model) for
--seconds under mixed load, while killing a worker with SIGKILL every ~--kill-every
seconds (the first kill takes a rank other than 0: the group loses one rank):
  * ghz, unary Generate, closed loop;
  * GenerateStream clients (tools/loadgen's stream timing), each call one of: read to
    the end; cancel after a few messages; a short deadline; disconnect without reading;
  * a probe (Generate, 1 token) every 0.25 s, which times each recovery.
Every call has a watchdog: a call without an answer after --hang-s is a hang.

Checks, at the end (exit 1 when one fails; docs/reliability.md states the bounds):
  * no hang: every call ended with a response or an error that names why;
  * every recovery took at most --recovery-bound-s (first successful probe after a kill);
  * every KV block is free, the queue and the batch are empty;
  * the server process's RSS, threads and open files are within bounds of their
    values after warm-up;
  * /metrics agrees with the clients: successes lie between the calls the clients saw
    succeed and those plus the calls they abandoned (cancelled, deadline, disconnected:
    the server may finish those), and the same for the calls counted at all.

    tools/soak --seconds 600 --out soak.json      # the measured run
    tools/soak --seconds 60 --kill-every 20       # the CI variant
"""

import argparse
import asyncio
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc

from . import servers, stubs
from .soak_checks import ProcessSample, check_metrics, parse_metrics, percentile

PROMPTS = ["The king went to the river", "Write a haiku about the sea.",
           "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
           "Once upon a time", "List three colours:", "The capital of France is"]


class Tally:
    """Client-side outcome counts of every Generate/GenerateStream call."""

    def __init__(self):
        self.ok = 0
        self.errors = {}      # gRPC code name -> count, for calls read to the end.
        self.abandoned = 0    # Cancelled, deadline, disconnected: the server may finish them.
        self.hung = 0
        self.sent = 0

    def error(self, code):
        self.errors[code] = self.errors.get(code, 0) + 1


def request(pb, text, max_new_tokens):
    return pb.GenerationRequest(text=text), pb.Parameters(
        method=pb.GREEDY, stopping=pb.StoppingCriteria(max_new_tokens=max_new_tokens))


async def one_stream(pb, pb_grpc, target, tally, rng, hang_s):
    """One GenerateStream call with a random client behaviour."""
    behaviour = rng.choice(["read", "read", "cancel", "deadline", "disconnect"])
    req, params = request(pb, rng.choice(PROMPTS), rng.randint(4, 24))
    message = pb.SingleGenerationRequest(request=req, params=params)
    tally.sent += 1
    channel = grpc.aio.insecure_channel(target)
    try:
        stub = pb_grpc.GenerationServiceStub(channel)
        timeout = rng.uniform(0.05, 1.0) if behaviour == "deadline" else hang_s
        call = stub.GenerateStream(message, timeout=timeout)

        async def consume():
            seen = 0
            async for _ in call:
                seen += 1
                if behaviour == "cancel" and seen >= 2:
                    call.cancel()
                    return "abandoned"
            return "ok"

        if behaviour == "disconnect":
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            await channel.close(grace=None)  # Never read a message.
            tally.abandoned += 1
            return
        try:
            outcome = await asyncio.wait_for(consume(), hang_s + 5)
        except asyncio.TimeoutError:
            tally.hung += 1
            return
        except asyncio.CancelledError:
            outcome = "abandoned"
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                outcome = "abandoned"
            else:
                tally.error(e.code().name)
                return
        if outcome == "ok":
            tally.ok += 1
        else:
            tally.abandoned += 1
    finally:
        await channel.close(grace=None)


async def stream_clients(pb, pb_grpc, target, tally, n, stop, seed, hang_s):
    rng = random.Random(seed)

    async def client():
        while not stop.is_set():
            await one_stream(pb, pb_grpc, target, tally, rng, hang_s)
    await asyncio.gather(*(client() for _ in range(n)))


async def probe(pb, pb_grpc, target, tally, stop, successes):
    """Generate with 1 token every 0.25 s; records the end time of each success."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        req, params = request(pb, "The river", 1)
        while not stop.is_set():
            tally.sent += 1
            try:
                await stub.Generate(pb.BatchedGenerationRequest(requests=[req], params=params),
                                    timeout=10)
                tally.ok += 1
                successes.append(time.monotonic())
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    tally.abandoned += 1
                else:
                    tally.error(e.code().name)
            await asyncio.sleep(0.25)


def worker_pids(server_pid):
    """{rank: pid} of the server's fms-worker children."""
    ranks = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != server_pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if b"--rank" in argv:
            ranks[int(argv[argv.index(b"--rank") + 1])] = int(entry.name)
    return ranks


async def fault_injector(server_pid, shards, kill_every, stop, successes, faults, rng):
    """SIGKILLs a worker every ~kill_every s; records kill time, rank and recovery."""
    first = True
    while True:
        try:
            await asyncio.wait_for(stop.wait(), kill_every * rng.uniform(0.5, 1.5))
            return
        except asyncio.TimeoutError:
            pass
        ranks = worker_pids(server_pid)
        if len(ranks) < shards:
            continue  # Still restarting from the last kill.
        rank = rng.randrange(1, shards) if first and shards > 1 else rng.randrange(shards)
        first = False
        killed_at = time.monotonic()
        os.kill(ranks[rank], signal.SIGKILL)
        fault = {"rank": rank, "recovery_s": None, "killed_at": killed_at}
        faults.append(fault)
        while not stop.is_set():  # Recovered: a probe succeeded after the kill.
            after = [t for t in successes if t > killed_at + 0.01]
            if after:
                fault["recovery_s"] = after[0] - killed_at
                break
            await asyncio.sleep(0.1)


def run_ghz(target, seconds, workdir):
    """Starts ghz (unary Generate, 2 in flight) for `seconds`; returns (process, out path)."""
    data = [{"requests": [{"text": p}], "params": {"method": "GREEDY",
                                                   "stopping": {"max_new_tokens": 12}}}
            for p in PROMPTS]
    data_path = workdir / "ghz-data.json"
    data_path.write_text(json.dumps(data))
    out = workdir / "ghz.json"
    cache = pathlib.Path(os.environ.get("FMS_CACHE_DIR") or
                         pathlib.Path(os.environ.get("XDG_CACHE_HOME") or
                                      pathlib.Path.home() / ".cache") / "fms-serve")
    ghz = cache / "go" / "bin" / "ghz"
    command = [str(ghz), "--insecure", "--call", "fmaas.GenerationService.Generate",
               "--data-file", str(data_path), "-c", "2", "--connections", "1",
               "-z", f"{int(seconds)}s", "--timeout", "30s", "-O", "json", "-o", str(out),
               target]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out


async def load_phase(target, seconds, args, tally, successes, faults, server_pid, seed):
    pb, pb_grpc = stubs.load()[:2]
    stop = asyncio.Event()
    rng = random.Random(seed)
    tasks = [asyncio.create_task(stream_clients(pb, pb_grpc, target, tally, args.streams, stop,
                                                seed, args.hang_s)),
             asyncio.create_task(probe(pb, pb_grpc, target, tally, stop, successes))]
    if faults is not None:
        tasks.append(asyncio.create_task(fault_injector(
            server_pid, args.shards, args.kill_every, stop, successes, faults, rng)))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    # A fault near the end: keep probing (counted like the other probes) until
    # it recovers or the bound has passed, so that it is judged too.
    for fault in faults or []:
        again = asyncio.Event()
        while fault["recovery_s"] is None and \
                time.monotonic() - fault["killed_at"] < args.recovery_bound_s:
            before = len(successes)
            again.clear()
            probe_task = asyncio.create_task(probe(pb, pb_grpc, target, tally, again, successes))
            await asyncio.sleep(0.3)
            again.set()
            await probe_task
            if len(successes) > before:
                fault["recovery_s"] = successes[before] - fault["killed_at"]


def add_ghz(tally, out):
    """Adds ghz's outcomes to the tally. ghz reads every unary call to the end, but its
    own deadline and the connections it closes when its time is up abandon calls."""
    report = json.loads(out.read_text())
    tally.sent += report.get("count", 0)
    tally.ok += report.get("statusCodeDistribution", {}).get("OK", 0)
    for message, count in report.get("errorDistribution", {}).items():
        code = message.split("code = ", 1)[-1].split(" ", 1)[0]
        transport = "error reading from server" in message or "connection" in message
        if code in ("DeadlineExceeded", "Canceled") or transport:
            tally.abandoned += count
        else:
            name = re.sub(r"(?<!^)(?=[A-Z])", "_", code).upper()  # Python's spelling.
            tally.errors[name] = tally.errors.get(name, 0) + count
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tools/soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("FMS_SMOLLM2_DIR"),
                        help="model directory (default: $FMS_SMOLLM2_DIR, tools/fetch_model)")
    parser.add_argument("--seconds", type=float, default=600, help="time under faults")
    parser.add_argument("--warmup-s", type=float, default=10, help="load before the baseline")
    parser.add_argument("--kill-every", type=float, default=90, help="mean seconds between kills")
    parser.add_argument("--shards", type=int, default=2, help="tensor-parallel workers")
    parser.add_argument("--streams", type=int, default=3, help="concurrent stream clients")
    parser.add_argument("--hang-s", type=float, default=120, help="a call unanswered this long hangs")
    parser.add_argument("--recovery-bound-s", type=float, default=60)
    parser.add_argument("--rss-bound-mb", type=float, default=64)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", help="write the figures here (JSON)")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model or FMS_SMOLLM2_DIR is needed")

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="fms-soak-"))
    grpc_port, http_port = servers.free_port(), servers.free_port()
    command, env = servers.fms_command(args.model, "bfloat16", grpc_port, http_port, 16, 512)
    env = {**env, "NUM_SHARD": str(args.shards)}
    server = servers.Server("fms-serve", command, env, grpc_port, workdir / "server.log")
    server.start()
    target = server.target
    tally, successes, faults = Tally(), [], []
    try:
        asyncio.run(load_phase(target, args.warmup_s, args, tally, successes, None,
                               server.proc.pid, args.seed))
        baseline = ProcessSample.of(server.proc.pid)
        ghz, ghz_out = run_ghz(target, args.seconds, workdir)
        start = time.monotonic()
        asyncio.run(load_phase(target, args.seconds, args, tally, successes, faults,
                               server.proc.pid, args.seed + 1))
        ghz.wait(timeout=60)
        ghz_report = add_ghz(tally, ghz_out)
        time.sleep(3)  # Let cancelled sequences leave the batch.
        end = ProcessSample.of(server.proc.pid)
        metrics = parse_metrics(http_get(http_port, "/metrics"))
    finally:
        server.stop()
    result = summarize(args, tally, faults, baseline, end, metrics, ghz_report,
                       time.monotonic() - start)
    print(json.dumps(result["figures"], indent=1))
    for line in result["failures"]:
        print(f"soak: FAILED: {line}")
    print("soak: " + ("ok" if not result["failures"] else "FAILED") +
          f" (server log: {workdir / 'server.log'})")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if not result["failures"] else 1


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def summarize(args, tally, faults, baseline, end, metrics, ghz_report, wall_s):
    recoveries = [f["recovery_s"] for f in faults if f["recovery_s"] is not None]
    figures = {
        "seconds": round(wall_s, 1), "shards": args.shards,
        "calls": tally.sent, "ok": tally.ok, "errors": tally.errors,
        "abandoned": tally.abandoned, "hung": tally.hung,
        "ghz_calls": ghz_report.get("count"),
        "faults": len(faults), "ranks_killed": [f["rank"] for f in faults],
        "recovery_s_p50": percentile(recoveries, 50), "recovery_s_max": max(recoveries, default=None),
        "rss_mb": [baseline.rss_mb, end.rss_mb], "threads": [baseline.threads, end.threads],
        "open_files": [baseline.fds, end.fds],
        "metrics": {k: metrics.get(k) for k in (
            "tgi_request_count", "tgi_request_success", "tgi_request_failure",
            "fms_kv_cache_blocks", "fms_kv_cache_free_blocks", "tgi_queue_size",
            "tgi_batch_current_size")},
    }
    failures = []
    if tally.hung:
        failures.append(f"{tally.hung} calls hung (no answer in {args.hang_s} s)")
    if len(recoveries) < len(faults):
        failures.append(f"{len(faults) - len(recoveries)} faults never recovered")
    if recoveries and max(recoveries) > args.recovery_bound_s:
        failures.append(f"a recovery took {max(recoveries):.1f} s > {args.recovery_bound_s} s")
    if end.rss_mb - baseline.rss_mb > args.rss_bound_mb:
        failures.append(f"RSS grew {end.rss_mb - baseline.rss_mb:.0f} MiB > {args.rss_bound_mb}")
    if end.threads - baseline.threads > 8:
        failures.append(f"threads grew from {baseline.threads} to {end.threads}")
    if end.fds - baseline.fds > 16:
        failures.append(f"open files grew from {baseline.fds} to {end.fds}")
    failures += check_metrics(metrics, tally)
    for fault in faults:
        fault.pop("killed_at", None)
    return {"figures": figures, "failures": failures, "faults": faults}


if __name__ == "__main__":
    sys.exit(main())
