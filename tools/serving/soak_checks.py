"""The soak's end-of-run measurements and checks (tools/serving/soak.py): the server
process's resources, the Prometheus text of /metrics, and how its counts must agree
with what the clients saw."""

import dataclasses
import os
import pathlib


@dataclasses.dataclass
class ProcessSample:
    rss_mb: float
    threads: int
    fds: int

    @staticmethod
    def of(pid):
        status = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status if ":" in line)
        return ProcessSample(rss_mb=int(fields["VmRSS"].split()[0]) / 1024,
                             threads=int(fields["Threads"]),
                             fds=len(os.listdir(f"/proc/{pid}/fd")))


def parse_metrics(text):
    """{name: value} for unlabelled samples, {name: {labels: value}} for labelled ones
    (labels as the raw text between the braces); *_total duplicates are left out."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        if "{" in name_labels:
            name, labels = name_labels.split("{", 1)
            out.setdefault(name, {})[labels.rstrip("}")] = float(value)
        else:
            out[name_labels] = float(value)
    return out


def total(metrics, name):
    value = metrics.get(name, 0)
    return sum(value.values()) if isinstance(value, dict) else value


def by_label(metrics, name, label):
    """{label value: count} of a labelled counter."""
    out = {}
    for labels, value in (metrics.get(name) or {}).items():
        for pair in labels.split(","):
            key, _, v = pair.partition("=")
            if key == label:
                out[v.strip('"')] = out.get(v.strip('"'), 0) + value
    return out


def check_metrics(metrics, tally):
    """The ways /metrics disagrees with the clients' tally (empty when none). Abandoned
    calls (cancelled, deadline, disconnected) are the slack: the server may have
    finished, failed or never seen each of them."""
    failures = []
    if metrics.get("fms_kv_cache_free_blocks") != metrics.get("fms_kv_cache_blocks"):
        failures.append(f"KV blocks not all free: {metrics.get('fms_kv_cache_free_blocks')} of "
                        f"{metrics.get('fms_kv_cache_blocks')}")
    for gauge in ("tgi_queue_size", "tgi_batch_current_size"):
        if metrics.get(gauge):
            failures.append(f"{gauge} is {metrics[gauge]} after the load")
    successes = total(metrics, "tgi_request_success")
    if not tally.ok <= successes <= tally.ok + tally.abandoned:
        failures.append(f"tgi_request_success {successes:.0f} outside [{tally.ok}, "
                        f"{tally.ok + tally.abandoned}] (clients: ok, ok + abandoned)")
    failed = by_label(metrics, "tgi_request_failure", "err")
    refused = sum(failed.get(k, 0) for k in ("validation", "conc_limit", "unavailable"))
    counted = total(metrics, "tgi_request_count") + refused
    if not tally.sent - tally.abandoned <= counted <= tally.sent:
        failures.append(f"calls counted {counted:.0f} (tgi_request_count + refusals) outside "
                        f"[{tally.sent - tally.abandoned}, {tally.sent}] (clients: answered, sent)")
    unavailable = tally.errors.get("UNAVAILABLE", 0)
    if not unavailable <= failed.get("unavailable", 0) <= unavailable + tally.abandoned:
        failures.append(f"err=unavailable {failed.get('unavailable', 0):.0f}, clients saw "
                        f"{unavailable} UNAVAILABLE")
    step_errors = sum(v for k, v in tally.errors.items()
                      if k not in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"))
    if not step_errors <= failed.get("generate", 0) <= step_errors + tally.abandoned:
        failures.append(f"err=generate {failed.get('generate', 0):.0f}, clients saw "
                        f"{step_errors} generation errors")
    return failures


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
