"""Figures of one load run (percentiles, throughput) and the plot that compares servers."""

import json

import numpy as np

PERCENTILES = (50, 90, 99)


def percentiles(values, prefix):
    if not values:
        return {f"{prefix}_p{p}": None for p in PERCENTILES}
    got = np.percentile(np.asarray(values, dtype=np.float64), PERCENTILES)
    return {f"{prefix}_p{p}": round(float(v), 2) for p, v in zip(PERCENTILES, got)}


def summarize(records, wall_s):
    """records: per-request dicts of tools/serving/loadgen.py; wall_s: first send to
    last answer. Latencies in milliseconds."""
    ok = [r for r in records if r["error"] is None]
    errors = {}
    for r in records:
        if r["error"] is not None:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    ttft = [r["ttft_ms"] for r in ok if r["ttft_ms"] is not None]
    itl = [gap for r in ok for gap in r["itl_ms"]]
    e2e = [r["e2e_ms"] for r in ok]
    out_tokens = sum(r["generated_tokens"] for r in ok)
    summary = {"requests": len(records), "completed": len(ok), "errors": errors,
               "wall_s": round(wall_s, 3),
               "input_tokens_mean": round(float(np.mean([r["input_tokens"] for r in ok])), 1)
               if ok else None,
               "output_tokens": out_tokens,
               "output_tokens_per_s": round(out_tokens / wall_s, 2) if wall_s > 0 else None,
               "requests_per_s": round(len(ok) / wall_s, 3) if wall_s > 0 else None}
    summary.update(percentiles(ttft, "ttft_ms"))
    summary.update(percentiles(itl, "itl_ms"))
    summary.update(percentiles(e2e, "e2e_ms"))
    return summary


def plot(result_paths, out_png, title=None):
    """Output tokens/s against p90 TTFT and p90 ITL, one line per label (server)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = {}
    for path in result_paths:
        result = json.loads(open(path).read())
        lines.setdefault(result["label"], []).append(
            {**result["summary"], "load": result.get("load")})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, points in sorted(lines.items()):
        points.sort(key=lambda s: s["output_tokens_per_s"] or 0)
        x = [s["output_tokens_per_s"] for s in points]
        for ax, key in zip(axes, ("ttft_ms_p90", "itl_ms_p90")):
            y = [s[key] for s in points]
            ax.plot(x, y, marker="o", label=label)
            for xi, yi, s in zip(x, y, points):
                if s.get("load"):
                    ax.annotate(s["load"], (xi, yi), textcoords="offset points",
                                xytext=(4, 4), fontsize=8)
    for ax, name in zip(axes, ("p90 time to first token (ms)", "p90 inter-token latency (ms)")):
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(name)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
