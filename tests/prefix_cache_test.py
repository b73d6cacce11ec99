"""Automatic prefix caching through the real fms-server (issue 14, item 5):
two servers on the same fp32 test model, identical but for
ENABLE_PREFIX_CACHING, answer the same requests: prompts sharing a long
prefix, the same prompt again (every full block cached), prompts that part
mid-block, seeded sampling, prompt-token details (which compute the whole
prompt), and a 16-input burst on a KV pool small enough to preempt
(KV_CACHE_MEMORY). Every answer must be the same: tokens equal, logprobs
within 1e-4. /metrics must show the hits on one server and none on the other.
"""

import json
import math
import urllib.request

import grpc
import pytest
from google.protobuf import json_format

from server_harness import free_port, metric, start_server, wait_ready

SYSTEM = ("You are a helpful assistant for the old kingdom. Answer briefly, kindly and "
          "truthfully; if you do not know, say so. The king lives in the castle by the "
          "river, the queen keeps the library, and the knights ride at dawn. ") * 2
QUESTIONS = ["Who keeps the library?", "Where does the king live?",
             "When do the knights ride?", "Who keeps the library? Tell me more."]
TOLERANCE = 1e-4
BLOCKS = 48  # KV pool of the servers: less than the burst below needs without sharing.
DETAILS = {"generatedTokens": True, "tokenLogprobs": True}


def kv_budget(model_dir, blocks):
    """KV_CACHE_MEMORY for `blocks` fp32 blocks of 16 positions."""
    config = json.loads((model_dir / "config.json").read_text())
    per_block = (2 * config["num_hidden_layers"] * config["num_key_value_heads"] *
                 config["head_dim"] * 16 * 4)
    return blocks * per_block


@pytest.fixture(scope="module")
def servers(pb, test_models):
    """{caching: (stub, http_port)} for caching on and off."""
    started = {}
    for caching in (True, False):
        http = free_port()
        process, port = start_server(
            test_models, "--dtype-str=float32", "--max-batch-size=16",
            "--max-sequence-length=512", f"--port={http}",
            # Prompt chunks are not cut beside decodes (MIXED_STEP_RATIO's cut
            # follows step times, which vary with the build): the burst below
            # is admitted as fast as the pool allows, and preempts.
            "--mixed-step-ratio=0",
            f"--kv-cache-memory={kv_budget(test_models / 'gqa2', BLOCKS)}",
            f"--enable-prefix-caching={'true' if caching else 'false'}", per_test=False)
        stub = wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
        started[caching] = (stub, http, process)
    yield {caching: (stub, http) for caching, (stub, http, _) in started.items()}
    for _, _, process in started.values():
        process.terminate()
        assert process.wait(timeout=30) == 0


def ask(pb, stub, text, **params):
    params.setdefault("stopping", {"maxNewTokens": 24, "minNewTokens": 24})
    params.setdefault("response", DETAILS)
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text=text)],
        params=json_format.ParseDict(params, pb[0].Parameters()))
    return stub.Generate(request, timeout=120).responses[0]


def assert_same(a, b, what):
    assert [t.text for t in a.tokens] == [t.text for t in b.tokens], what
    assert a.text == b.text and a.stop_reason == b.stop_reason, what
    for x, y in zip(a.tokens, b.tokens):
        assert math.isclose(x.logprob, y.logprob, abs_tol=TOLERANCE), (what, x.logprob, y.logprob)
    for x, y in zip(a.input_tokens, b.input_tokens):
        if not math.isnan(x.logprob):
            assert math.isclose(x.logprob, y.logprob, abs_tol=TOLERANCE), what


def metrics(http):
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {name: metric(text, name) for name in (
        "fms_prefix_cache_queries_total", "fms_prefix_cache_hits_total",
        "fms_prefix_cache_blocks", "fms_kv_cache_free_blocks", "fms_kv_cache_blocks",
        "fms_preemptions_total")}


def both(pb, servers, text, **params):
    return [ask(pb, servers[caching][0], text, **params) for caching in (True, False)]


def test_sequential_requests_sharing_a_prefix_are_unchanged(pb, servers):
    before = metrics(servers[True][1])
    for question in QUESTIONS + QUESTIONS[:1]:  # The last: the same prompt again.
        on, off = both(pb, servers, SYSTEM + question)
        assert_same(on, off, question)
        assert on.generated_token_count == 24
    after = metrics(servers[True][1])
    hits = after["fms_prefix_cache_hits_total"] - before["fms_prefix_cache_hits_total"]
    queries = after["fms_prefix_cache_queries_total"] - before["fms_prefix_cache_queries_total"]
    # Four of the five share the system text's full blocks (~60 tokens each).
    print(f"prefix cache: {hits:.0f} of {queries:.0f} prompt tokens hit")
    assert hits >= 4 * 48 and queries > hits
    assert after["fms_prefix_cache_blocks"] > 0
    off = metrics(servers[False][1])
    assert off["fms_prefix_cache_hits_total"] == 0 and off["fms_prefix_cache_blocks"] == 0


def test_seeded_sampling_and_prompt_details_are_unchanged(pb, servers):
    sampling = dict(method="SAMPLE", sampling={"seed": 7, "temperature": 0.8, "topK": 20})
    for question in QUESTIONS[:2]:
        on, off = both(pb, servers, SYSTEM + question, **sampling)
        assert_same(on, off, f"sampled: {question}")
    details = {**DETAILS, "inputTokens": True, "tokenRanks": True}
    on, off = both(pb, servers, SYSTEM + QUESTIONS[0], response=details)
    assert len(on.input_tokens) == on.input_token_count  # Every prompt position has logits.
    assert [t.rank for t in on.input_tokens] == [t.rank for t in off.input_tokens]
    assert_same(on, off, "with input token details")


def test_a_burst_on_a_small_pool_is_unchanged(pb, servers):
    # 16 prompts of ~75 tokens + 24 new each in one batched call (all arrive
    # at once): ~7 blocks apiece, 112 without sharing, against a pool of 48, so
    # both servers preempt; prompts part at different places, some inside a block.
    texts = [SYSTEM[:60 + 7 * i] + QUESTIONS[i % 4] for i in range(16)]
    params = json_format.ParseDict({"stopping": {"maxNewTokens": 24, "minNewTokens": 24},
                                    "response": DETAILS}, pb[0].Parameters())
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text=t) for t in texts], params=params)
    answers, before = {}, {c: metrics(servers[c][1]) for c in (True, False)}
    for caching in (True, False):
        answers[caching] = servers[caching][0].Generate(request, timeout=300).responses
    for text, on, off in zip(texts, answers[True], answers[False]):
        assert_same(on, off, text)
    after = {c: metrics(servers[c][1]) for c in (True, False)}
    for caching in (True, False):  # Every block back in the free pool.
        m = after[caching]
        assert m["fms_kv_cache_free_blocks"] == m["fms_kv_cache_blocks"] == BLOCKS
    preempted = {c: after[c]["fms_preemptions_total"] - before[c]["fms_preemptions_total"]
                 for c in (True, False)}
    hits = after[True]["fms_prefix_cache_hits_total"] - before[True]["fms_prefix_cache_hits_total"]
    print(f"burst: preemptions on/off {preempted[True]:.0f}/{preempted[False]:.0f}, "
          f"{hits:.0f} prompt tokens hit")
    assert preempted[False] > 0 and hits > 0
