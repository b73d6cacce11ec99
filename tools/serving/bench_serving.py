"""tools/bench_serving: the side-by-side serving benchmark, fms-serve against the peer a
TGIS user would pick instead (vLLM's CPU build with vllm-tgis-adapter), or the same load
against one running server (--target).

For each dtype, rounds alternate A B A B: each round starts a server on the model,
times its start-up (process start to gRPC health SERVING), runs every load with
tools/loadgen's client, samples its resident memory, and stops it. Loads:
  * fixed shape (deploy/ghz/bench_fixed.json): a 100-token prompt, exactly 64 greedy
    tokens, closed loop at each concurrency, max(requests, concurrency) requests, after
    2 warm-up requests;
  * mixed shape (deploy/ghz/generate_stream.json, exact tokens): prompts of 16 to 1,500
    tokens, 16 to 256 new tokens, mixed sampling, Poisson arrivals.
Writes every result (JSON), medians over rounds with ratios fms/peer (summary.json,
table.md) and one plot per dtype into --out.
"""

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

from . import loadgen, report, servers, stubs, workload

ROOT = stubs.ROOT
FIXED = ROOT / "deploy" / "ghz" / "bench_fixed.json"
MIXED = ROOT / "deploy" / "ghz" / "generate_stream.json"
FIGURES = ["output_tokens_per_s", "requests_per_s", "ttft_ms_p50", "ttft_ms_p90",
           "ttft_ms_p99", "itl_ms_p50", "itl_ms_p90", "itl_ms_p99", "input_tokens_mean"]
LABELS = {"fms": "fms-serve", "peer": "vLLM + tgis-adapter"}


def loads(args):
    out = [(f"c={c}", FIXED, dict(concurrency=c, n=max(args.requests, c)))
           for c in args.levels]
    if args.mixed_requests:
        out.append((f"mixed {args.mixed_rate}/s", MIXED,
                    dict(rate=args.mixed_rate, n=args.mixed_requests)))
    return out


def run_loads(target, label, args, extra):
    """Every load against one serving target; returns result dicts."""
    results = []
    for name, config_path, kw in loads(args):
        config = workload.read_config(config_path)
        requests = workload.stream_requests(config, exact_tokens=True)
        records, wall = asyncio.run(loadgen.run_load(
            target, requests, kw["n"], concurrency=kw.get("concurrency"),
            rate=kw.get("rate"), warmup=2, seed=args.seed, unique_prompts=args.unique_prompts))
        summary = report.summarize(records, wall)
        print(f"{label} {name}: {json.dumps({k: summary[k] for k in FIGURES})}",
              file=sys.stderr)
        results.append({"label": label, "load": name, "summary": summary,
                        "records": records, **extra})
    return results


def run_round(kind, dtype, round_index, args, out_dir):
    grpc_port, http_port = servers.free_port(), servers.free_port()
    if kind == "fms":
        command, env = servers.fms_command(args.model, dtype, grpc_port, http_port,
                                           args.max_batch, args.max_seq)
    else:
        command, env = servers.peer_command(args.peer_venv, args.model, dtype, grpc_port,
                                            http_port, args.max_batch, args.max_seq,
                                            os.cpu_count())
    log = out_dir / f"{kind}-{dtype}-{round_index}.log"
    server = servers.Server(LABELS[kind], command, env, grpc_port, log).start()
    try:
        extra = {"server": kind, "dtype": dtype, "round": round_index,
                 "startup_s": round(server.startup_s, 2),
                 "idle_rss_mb": round(server.rss_mb(), 1)}
        results = run_loads(server.target, LABELS[kind], args, extra)
        for r in results:
            r["peak_rss_mb"] = round(server.peak_rss_mb, 1)
    finally:
        server.stop()
    for r in results:
        name = f"{kind}-{dtype}-{round_index}-{r['load'].replace(' ', '_').replace('/', '')}"
        (out_dir / f"{name}.json").write_text(json.dumps(r) + "\n")
    return results


def medians(results):
    """{(dtype, load, server): {figure: median over rounds}}."""
    groups = {}
    for r in results:
        groups.setdefault((r["dtype"], r["load"], r["server"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        figures = {f: statistics.median(x["summary"][f] for x in rs
                                        if x["summary"][f] is not None) for f in FIGURES}
        for f in ("startup_s", "peak_rss_mb"):  # Unknown for a running --target.
            known = [x[f] for x in rs if x.get(f) is not None]
            figures[f] = statistics.median(known) if known else None
        figures["rounds"] = len(rs)
        figures["errors"] = sum(sum(x["summary"]["errors"].values()) for x in rs)
        out[key] = figures
    return out


def table(med, dtype, load_names):
    cols = FIGURES + ["startup_s", "peak_rss_mb", "errors"]
    lines = [f"| {dtype} | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for load in load_names:
        ours, peer = med.get((dtype, load, "fms")), med.get((dtype, load, "peer"))
        target = med.get((dtype, load, "target"))
        for name, row in (("fms-serve", ours), ("vLLM + adapter", peer),
                          (LABELS.get("target"), target)):
            if row:
                lines.append(f"| {load} {name} | " + " | ".join(
                    "" if row[c] is None else f"{row[c]:g}" for c in cols) + " |")
        if ours and peer:
            lines.append(f"| {load} ratio | " + " | ".join(
                f"{ours[c] / peer[c]:.2f}×" if ours[c] is not None and peer[c] else ""
                for c in cols) + " |")
    return "\n".join(lines)


def write_reports(results, args, out_dir):
    med = medians(results)
    names = [name for name, _, _ in loads(args)]
    md = [f"Command: `tools/bench_serving {' '.join(sys.argv[1:])}`",
          f"Date: {datetime.date.today()}; machine: {platform.node()}, "
          f"{os.cpu_count()} CPUs; model: {args.model.name}", ""]
    for dtype in args.dtypes:
        md += [table(med, dtype, names), ""]
        paths = []  # The medians of each level, one line a server.
        for (d, load, server), figures in med.items():
            if d == dtype and load.startswith("c="):
                path = out_dir / f"median-{server}-{dtype}-{load}.json"
                path.write_text(json.dumps({"label": LABELS[server], "load": load,
                                            "summary": figures}))
                paths.append(path)
        report.plot(paths, out_dir / f"serving-{dtype}.png",
                    f"{args.model.name} {dtype}, fixed shape (100 in, 64 out), c={args.levels}")
    (out_dir / "table.md").write_text("\n".join(md) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(
        [{"dtype": k[0], "load": k[1], "server": k[2], **v} for k, v in med.items()],
        indent=1) + "\n")
    print("\n".join(md))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tools/bench_serving",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=pathlib.Path, help="model dir (default: fetch_model)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--levels", default="1,4,16,64", help="closed-loop concurrencies")
    parser.add_argument("--requests", type=int, default=32, help="timed requests per level")
    parser.add_argument("--mixed-requests", type=int, default=32, help="0: no mixed shape")
    parser.add_argument("--mixed-rate", type=float, default=0.5, help="arrivals per second")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds per dtype")
    parser.add_argument("--servers", default="fms,peer", help="which to start, in order")
    parser.add_argument("--max-batch", type=int, default=64, help="both servers' batch cap")
    parser.add_argument("--max-seq", type=int, default=2048, help="both servers' context")
    parser.add_argument("--target", help="HOST:PORT of a running server: load it only")
    parser.add_argument("--label", default="target", help="its name in the reports")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unique-prompts", action="store_true",
                        help="no two requests share a prompt prefix (prefix caching off the "
                             "table: the fixed shape's identical prompts are otherwise cache hits)")
    parser.add_argument("--report", action="store_true",
                        help="only rebuild table and plots from the results in --out")
    parser.add_argument("--out", type=pathlib.Path, help="results folder")
    args = parser.parse_args(argv)
    args.dtypes = args.dtypes.split(",")
    args.levels = [int(c) for c in args.levels.split(",")]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    cache = pathlib.Path(os.environ.get("FMS_CACHE_DIR", pathlib.Path.home() / ".cache/fms-serve"))
    args.out = args.out or cache / "bench-serving" / stamp
    return args


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        results = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))
                   if p.name.startswith(("fms-", "peer-", "target-"))]
        LABELS["target"] = args.label
        args.model = args.model or pathlib.Path(args.out.name)
        write_reports(results, args, args.out)
        return 0
    if args.target:
        LABELS["target"] = args.label
        args.dtypes = ["served"]
        args.model = args.model or pathlib.Path(args.target)
        results = run_loads(args.target, args.label, args,
                            {"server": "target", "dtype": "served", "round": 0})
        for i, r in enumerate(results):
            (args.out / f"target-{i}.json").write_text(json.dumps(r) + "\n")
        write_reports(results, args, args.out)
        return 0
    if args.model is None:
        args.model = pathlib.Path(subprocess.run(
            [str(ROOT / "tools" / "fetch_model")], check=True, capture_output=True,
            text=True).stdout.strip().splitlines()[-1])
    kinds = args.servers.split(",")
    if "peer" in kinds:
        args.peer_venv = subprocess.run(
            [str(ROOT / "tools" / "peer" / "install")], check=True, capture_output=True,
            text=True).stdout.strip().splitlines()[-1]
    if "fms" in kinds:
        subprocess.run(["bazel", "build", "//server:fms-server",
                        "//sharding:fms-worker"], cwd=ROOT, check=True)
    results = []
    for dtype in args.dtypes:
        for round_index in range(args.rounds):
            for kind in kinds:
                results += run_round(kind, dtype, round_index, args, args.out)
    write_reports(results, args, args.out)
    print(f"results in {args.out}", file=sys.stderr)
    return 0
