"""The load tools against the real fms-server on a test model: ghz with the
configurations of deploy/ghz/, and tools/loadgen with the same files.

Each ghz config (Generate, GenerateStream, Tokenize, with their committed data: prompts of
16 to 1,500 tokens, mixed sampling, stop sequences) runs 300 requests at concurrency 32
through the real ghz (tools/bootstrap installs it) over server reflection, the one-line
call of the README. Every call must succeed, and afterwards every KV block must be free
again on /metrics: load leaves nothing behind. loadgen's records must match what the
server streamed (token counts, one gap per token after the first)."""

import json
import os
import pathlib
import re
import subprocess
import time
import urllib.request

import pytest

from conftest import BAZEL_BIN, ROOT, cache_dir
from server_harness import free_port

CONFIGS = ["generate", "generate_stream", "tokenize"]
TOTAL, CONCURRENCY = 300, 32


def ghz_binary():
    ghz = cache_dir() / "go" / "bin" / "ghz"
    if not ghz.exists():
        pytest.fail(f"{ghz} missing: tools/bootstrap installs ghz")
    return ghz


def metric(text, name):
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} not on /metrics"
    return float(match.group(1))


@pytest.fixture(scope="module")
def server(test_models, tmp_path_factory):
    """fms-server on the gqa2 test model, its context long enough for every prompt of the
    data files in the test tokenizer's (small-vocabulary) tokens."""
    grpc_port, http_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("ghz") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BAZEL_BIN / "server" / "fms-server"),
             f"--model-name={test_models / 'gqa2'}", f"--grpc-port={grpc_port}",
             f"--port={http_port}", "--max-sequence-length=8192", "--max-batch-size=16"],
            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=1):
                break
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "server did not start"
            time.sleep(0.2)
    yield {"grpc": f"127.0.0.1:{grpc_port}", "http": f"http://127.0.0.1:{http_port}",
           "log": log}
    proc.terminate()
    assert proc.wait(timeout=60) == 0, log.read_text()[-4000:]


@pytest.mark.parametrize("name", CONFIGS)
def test_ghz_config_runs_without_errors_and_frees_every_block(server, name, tmp_path):
    report_path = tmp_path / "report.json"
    # The README's call, with the test's own host and count.
    result = subprocess.run(
        [str(ghz_binary()), "--config", f"deploy/ghz/{name}.json", "--total", str(TOTAL),
         "--concurrency", str(CONCURRENCY), "--format", "json", "--output",
         str(report_path), server["grpc"]],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["count"] == TOTAL
    assert not report.get("errorDistribution"), report["errorDistribution"]
    assert report["statusCodeDistribution"] == {"OK": TOTAL}, report["statusCodeDistribution"]
    deadline = time.time() + 10
    while True:
        with urllib.request.urlopen(server["http"] + "/metrics", timeout=5) as r:
            text = r.read().decode()
        free, blocks = (metric(text, "fms_kv_cache_free_blocks"),
                        metric(text, "fms_kv_cache_blocks"))
        if free == blocks or time.time() > deadline:
            break
        time.sleep(0.2)
    assert free == blocks > 0, f"{blocks - free} KV blocks still held after the load"


def test_ghz_configs_use_reflection_and_committed_data():
    """The configs name no .proto (ghz asks the server by reflection) and their data
    files exist with prompts and parameters as deploy/ghz/README.md says."""
    for name in CONFIGS:
        config = json.loads((ROOT / "deploy" / "ghz" / f"{name}.json").read_text())
        assert "proto" not in config and "protoset" not in config
        data = json.loads((ROOT / config["data-file"]).read_text())
        assert len(data) >= 32
    stream = json.loads((ROOT / "deploy/ghz/data/generate_stream.json").read_text())
    assert {m["params"].get("method", "GREEDY") for m in stream} == {"GREEDY", "SAMPLE"}
    assert any(m["params"]["stopping"].get("stop_sequences") for m in stream)
    news = [m["params"]["stopping"]["max_new_tokens"] for m in stream]
    assert min(news) >= 16 and max(news) <= 256 and max(news) > 128
    assert os.path.getsize(ROOT / "deploy/ghz/data/generate.json") > 50_000


def loadgen(*args, check=True):
    result = subprocess.run([str(ROOT / "tools" / "loadgen"), *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_loadgen_closed_loop_records_every_token(server, tmp_path):
    out = tmp_path / "closed.json"
    loadgen("run", "--config", "deploy/ghz/generate_stream.json", "--host", server["grpc"],
            "-c", 4, "-n", 16, "--warmup", 1, "--label", "fms", "--out", out, "--quiet")
    result = json.loads(out.read_text())
    summary, records = result["summary"], result["records"]
    assert summary["completed"] == 16 and summary["errors"] == {}
    assert len(records) == 16 and result["concurrency"] == 4
    for record in records:
        assert record["input_tokens"] > 0 and record["generated_tokens"] >= 1
        assert len(record["itl_ms"]) == record["generated_tokens"] - 1
        assert 0 < record["ttft_ms"] <= record["e2e_ms"]
        assert record["stop_reason"] in (1, 2, 5, 6)  # MAX_TOKENS EOS STOP_SEQUENCE TOKEN_LIMIT
    assert summary["output_tokens"] == sum(r["generated_tokens"] for r in records)
    assert summary["ttft_ms_p50"] <= summary["ttft_ms_p90"] <= summary["ttft_ms_p99"]
    assert summary["itl_ms_p50"] <= summary["itl_ms_p99"]


def test_loadgen_unique_prompts_get_no_prefix_cache_hits(server, tmp_path):
    def hits():
        with urllib.request.urlopen(server["http"] + "/metrics", timeout=5) as r:
            return metric(r.read().decode(), "fms_prefix_cache_hits_total")
    counts = {}
    for unique in (True, False):
        before = hits()
        loadgen("run", "--config", "deploy/ghz/bench_fixed.json", "--host", server["grpc"],
                "-c", 2, "-n", 4, "--warmup", 1, "--quiet",
                *(["--unique-prompts"] if unique else []))
        counts[unique] = hits() - before
    # The fixed shape's one prompt is a cache hit after its first call, unless each
    # request is made unique at its start.
    assert counts[True] == 0 and counts[False] > 0, counts


def test_loadgen_exact_tokens_open_loop_and_plot(server, tmp_path):
    """--exact-tokens makes the server generate each request's max_new_tokens (stop
    sequences dropped, min_new_tokens raised); the open loop sends at a Poisson rate."""
    out = tmp_path / "open.json"
    loadgen("run", "--config", "deploy/ghz/generate.json", "--host", server["grpc"],
            "--rate", 20, "-n", 10, "--warmup", 0, "--exact-tokens", "--out", out, "--quiet")
    result = json.loads(out.read_text())
    data = json.loads((ROOT / "deploy/ghz/data/generate.json").read_text())
    wanted = [m["params"]["stopping"]["max_new_tokens"] for m in data for _ in m["requests"]]
    got = [r["generated_tokens"] for r in result["records"]]
    assert result["rate"] == 20 and got == wanted[:10]
    png = tmp_path / "plot.png"
    loadgen("plot", "--out", png, out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loadgen_refuses_remote_hosts_from_files_and_calls_without_tokens(tmp_path):
    config = json.loads((ROOT / "deploy/ghz/generate_stream.json").read_text())
    config["host"] = "203.0.113.7:8033"
    remote = tmp_path / "remote.json"
    remote.write_text(json.dumps(config))
    result = loadgen("run", "--config", remote, "-n", 1, check=False)
    assert result.returncode == 2 and "not loopback" in result.stderr
    result = loadgen("run", "--config", "deploy/ghz/tokenize.json", "-n", 1, check=False)
    assert result.returncode == 2 and "use ghz" in result.stderr
