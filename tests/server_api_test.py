"""fms-server's API behaviour end to end (TGIS semantics, tgis-api.md sections
1-2 and 6): validation cases as data (tests/cases/validation_errors.json),
golden request/response cases (tests/cases/generation_cases*.json), and every
single-input Generate case also run through GenerateStream, whose text must
equal the unary text."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import json_format
from grpc_tools import protoc

from server_harness import *  # noqa: F401,F403 - helpers


def test_model_info(pb, stub):
    info = stub.ModelInfo(pb[0].ModelInfoRequest(model_id="anything"))
    assert (info.model_kind, info.max_sequence_length, info.max_new_tokens) == (0, MAX_SEQ, MAX_NEW)


@pytest.mark.parametrize("case", json.loads((ROOT / "tests/cases/validation_errors.json").read_text()),
                         ids=lambda c: c["name"])
def test_validation_errors(pb, stub, case):
    body = json.loads(json.dumps(case["request"]).replace("LONG_INPUT_128", " ".join(["water"] * 200)))
    request = json_format.ParseDict(body, pb[0].BatchedGenerationRequest())
    with pytest.raises(grpc.RpcError) as error:
        stub.Generate(request)
    assert error.value.code().name == case["code"]
    if case["name"] == "input as long as the context":
        assert error.value.details().startswith("input tokens (")
        assert error.value.details().endswith(") plus prefix length (0) must be < 128")
    else:
        assert error.value.details() == case["message"]


def test_greedy_default_is_20_tokens_and_stream_equals_unary(pb, stub):
    unary, _ = assert_stream_matches_unary(pb, stub, "The river and the king")
    assert unary.generated_token_count <= 20
    assert unary.stop_reason in (1, 2)  # MAX_TOKENS, or EOS_TOKEN early


def test_max_and_min_new_tokens(pb, stub):
    unary, _ = assert_stream_matches_unary(pb, stub, "Water", stopping={"maxNewTokens": 7,
                                                                        "minNewTokens": 7})
    assert (unary.generated_token_count, unary.stop_reason) == (7, 1)


def test_token_limit_when_max_sequence_length_shortens(pb, stub):
    text = " ".join(["stone"] * 45)
    unary = generate(pb, stub, text, stopping={"maxNewTokens": 100, "minNewTokens": 1})
    assert unary.input_token_count + 100 > MAX_SEQ
    if unary.stop_reason != 2:  # Unless EOS came first.
        assert unary.stop_reason == 6  # TOKEN_LIMIT
        assert unary.input_token_count + unary.generated_token_count == MAX_SEQ


def test_stop_sequence_cuts_the_text(pb, stub):
    full = generate(pb, stub, "The garden", stopping={"maxNewTokens": 30, "minNewTokens": 30})
    words = full.text.split()
    assert len(words) > 3
    stop = words[2]
    for include in (True, False):
        unary, messages = assert_stream_matches_unary(
            pb, stub, "The garden", stopping={"maxNewTokens": 30, "minNewTokens": 0,
                                              "stopSequences": [stop],
                                              "includeStopSequence": include})
        assert unary.stop_reason == 5 and unary.stop_sequence == stop
        cut = full.text.index(stop) + (len(stop) if include else 0)
        assert unary.text == full.text[:cut]


def test_seeded_sampling_is_reproducible_and_echoes_the_seed(pb, stub):
    params = dict(method="SAMPLE", sampling={"seed": 42, "temperature": 0.9},
                  stopping={"maxNewTokens": 12})
    a = generate(pb, stub, "Morning", **params)
    b = generate(pb, stub, "Morning", **params)
    assert a.text == b.text and a.seed == 42
    unary, messages = assert_stream_matches_unary(pb, stub, "Morning", **params)
    assert messages[0].seed == 42 and messages[-1].seed == 42


def test_random_seeds_are_32_bit_and_per_input(pb, stub):
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text="Winter")] * 5,
        params=json_format.ParseDict({"method": "SAMPLE", "stopping": {"maxNewTokens": 4}},
                                     pb[0].Parameters()))
    seeds = [r.seed for r in stub.Generate(request).responses]
    assert len(set(seeds)) == 5 and all(0 <= s < 2**32 for s in seeds)


def test_batched_generate_keeps_input_order(pb, stub):
    texts = ["Fire", "The stone and the water", "Light"]
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text=t) for t in texts],
        params=json_format.ParseDict({"stopping": {"maxNewTokens": 6}}, pb[0].Parameters()))
    batched = stub.Generate(request).responses
    for text, response in zip(texts, batched):
        assert response.text == generate(pb, stub, text, stopping={"maxNewTokens": 6}).text


def test_token_details_and_input_text(pb, stub):
    params = dict(stopping={"maxNewTokens": 5}, response={
        "inputText": True, "generatedTokens": True, "inputTokens": True,
        "tokenLogprobs": True, "tokenRanks": True, "topNTokens": 2})
    unary, messages = assert_stream_matches_unary(pb, stub, "The old king", **params)
    assert unary.text.startswith("The old king")
    assert len(unary.tokens) == unary.generated_token_count
    assert all(t.rank >= 1 and t.logprob <= 0 and len(t.top_tokens) >= 2 for t in unary.tokens)
    assert len(unary.input_tokens) == unary.input_token_count
    assert unary.input_tokens[0].text == "<s>" and unary.input_tokens[0].logprob != unary.input_tokens[0].logprob  # NaN
    assert all(t.rank >= 1 for t in unary.input_tokens[1:])
    # Stream: header, then the input-tokens message, then tokens.
    assert len(messages[1].input_tokens) == unary.input_token_count


def test_greedy_top_rank_token_is_the_chosen_one(pb, stub):
    unary = generate(pb, stub, "Evening", stopping={"maxNewTokens": 6},
                     response={"generatedTokens": True, "tokenRanks": True})
    assert all(t.rank == 1 for t in unary.tokens)


def test_tokenize(pb, stub):
    request = pb[0].BatchedTokenizeRequest(
        requests=[pb[0].TokenizeRequest(text="the king"), pb[0].TokenizeRequest(text="")],
        return_tokens=True, return_offsets=True, truncate_input_tokens=2)
    first, empty = stub.Tokenize(request).responses
    assert first.token_count == 2 and len(first.tokens) == 2
    assert first.offsets[-1].end == len("the king")
    assert empty.token_count == 1 and list(empty.tokens) == ["<s>"]


def test_missing_request_and_cancelled_stream_leave_the_server_healthy(pb, stub):
    with pytest.raises(grpc.RpcError) as error:
        list(stub.GenerateStream(pb[0].SingleGenerationRequest()))
    assert (error.value.code(), error.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                           "missing request")
    call = stub.GenerateStream(pb[0].SingleGenerationRequest(
        request=pb[0].GenerationRequest(text="Stone"),
        params=json_format.ParseDict({"stopping": {"maxNewTokens": 100, "minNewTokens": 100}},
                                     pb[0].Parameters())))
    next(call)
    call.cancel()
    assert generate(pb, stub, "Stone", stopping={"maxNewTokens": 3}).generated_token_count >= 1



# More of TGIS's integration behaviours (tgis-api.md section 6).

def test_empty_request_and_empty_input(pb, stub):
    assert len(stub.Generate(pb[0].BatchedGenerationRequest()).responses) == 0
    unary, _ = assert_stream_matches_unary(pb, stub, "", stopping={"maxNewTokens": 3})
    assert unary.input_token_count == 1  # BOS only.


def test_max_new_tokens_one(pb, stub):
    unary, messages = assert_stream_matches_unary(pb, stub, "Bread", stopping={"maxNewTokens": 1})
    assert unary.generated_token_count == 1


def _timed(pb, stub, run, params):
    start = time.time()
    if run == "unary":
        response = generate(pb, stub, "The long river", **params)
    else:
        response = stream(pb, stub, "The long river", **params)[-1]
    return response, time.time() - start


@pytest.mark.parametrize("limit", ["1ms", "quarter"])
def test_time_limit(pb, long_stub, limit):
    # The limit is set against this server's own speed, not a fixed 200 ms: a
    # fast build finished all 500 tokens of the test model inside 200 ms (CI,
    # stop 23). "quarter" is a fourth of a warm unlimited run's time.
    stub = long_stub
    params = {"stopping": {"maxNewTokens": 500, "minNewTokens": 500}}
    _timed(pb, stub, "unary", params)  # Warm-up.
    full, full_s = _timed(pb, stub, "unary", params)
    assert full.stop_reason == 1 and full.generated_token_count == 500  # MAX_TOKENS
    limit_ms = 1 if limit == "1ms" else max(2, int(full_s * 1000 / 4))
    params["stopping"]["timeLimitMillis"] = limit_ms
    for run in ("unary", "stream"):
        response, elapsed = _timed(pb, stub, run, params)
        assert response.stop_reason == 4  # TIME_LIMIT
        assert 1 <= response.generated_token_count < 500
        if limit == "quarter":
            assert response.generated_token_count >= 2
        assert elapsed < limit_ms / 1000 + 0.3


def test_truncate_input_tokens_with_input_echo(pb, stub):
    text = " ".join(["water"] * 80)
    unary = generate(pb, stub, text, truncateInputTokens=10, stopping={"maxNewTokens": 2},
                     response={"inputText": True, "inputTokens": True})
    assert unary.input_token_count == 10
    assert unary.text.startswith(text)  # The echo is the untruncated text.
    assert unary.input_tokens[0].text == "<s>"  # The first kept position becomes BOS.


def test_truncation_differs_between_generate_and_tokenize_as_in_tgis(pb, stub):
    # One prompt encoder (server/tokenizer.h EncodePrompt) serves both; only
    # Generate writes BOS over the first kept token (TGIS, tgis-api.md 1.10).
    text = "the old king went down to the river"
    request = pb[0].BatchedTokenizeRequest(requests=[pb[0].TokenizeRequest(text=text)],
                                           return_tokens=True)
    full = list(stub.Tokenize(request).responses[0].tokens)
    request.truncate_input_tokens = 4
    assert list(stub.Tokenize(request).responses[0].tokens) == full[-4:]
    unary = generate(pb, stub, text, truncateInputTokens=4, stopping={"maxNewTokens": 1},
                     response={"inputTokens": True})
    assert [t.text for t in unary.input_tokens] == ["<s>"] + full[-3:]


def test_add_special_tokens_false_leaves_bos_to_the_prompt(pb, stub, test_models):
    # ADD_SPECIAL_TOKENS (vLLM's TGIS adapter): for chat templates whose text
    # already starts with BOS. Tokenize and Generate both follow it.
    request = pb[0].BatchedTokenizeRequest(requests=[pb[0].TokenizeRequest(text="the king")],
                                           return_tokens=True)
    with_bos = list(stub.Tokenize(request).responses[0].tokens)
    assert with_bos[0] == "<s>"
    process, port = start_server(test_models, "--add-special-tokens=false")
    plain = wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    assert list(plain.Tokenize(request).responses[0].tokens) == with_bos[1:]
    unary = generate(pb, plain, "the king", stopping={"maxNewTokens": 1},
                     response={"inputTokens": True})
    assert [t.text for t in unary.input_tokens] == with_bos[1:]
    assert unary.input_token_count == len(with_bos) - 1
    process.terminate()
    assert process.wait(timeout=30) == 0


def test_emoji_output_input_echo_and_stop_sequence(pb, stub):
    text = "Smile \U0001F642 and caf\u00e9"
    unary, _ = assert_stream_matches_unary(pb, stub, text, stopping={"maxNewTokens": 8},
                                           response={"inputText": True})
    assert unary.text.startswith(text)
    tok = stub.Tokenize(pb[0].BatchedTokenizeRequest(
        requests=[pb[0].TokenizeRequest(text="\U0001F642")], return_tokens=True)).responses[0]
    assert "<0xF0>" in list(tok.tokens)  # Byte fallback pieces for the emoji.


def test_sampling_variants_are_valid_and_seeded(pb, stub):
    for sampling in ({"topK": 5, "seed": 1}, {"topP": 0.7, "seed": 2}, {"topP": 1e-9, "seed": 3},
                     {"temperature": 0.1, "seed": 4}, {"typicalP": 0.5, "seed": 5},
                     {"topK": 10, "topP": 0.9, "typicalP": 0.9, "temperature": 0.5, "seed": 6}):
        params = dict(method="SAMPLE", sampling=sampling,
                      stopping={"maxNewTokens": 6, "minNewTokens": 6})
        a, _ = assert_stream_matches_unary(pb, stub, "Morning light", **params)
        assert a.generated_token_count == 6 and a.seed == sampling["seed"]
        assert generate(pb, stub, "Morning light", **params).text == a.text
    # A vanishing top_p keeps only the best token: the same as greedy.
    tiny = generate(pb, stub, "Dark stone", method="SAMPLE",
                    sampling={"topP": 1e-9, "seed": 11}, stopping={"maxNewTokens": 8})
    assert tiny.text == generate(pb, stub, "Dark stone", stopping={"maxNewTokens": 8}).text


def test_batch_with_one_seed_reports_it_for_every_input(pb, stub):
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text=t) for t in ("a", "b", "c")],
        params=json_format.ParseDict({"method": "SAMPLE", "sampling": {"seed": 99},
                                      "stopping": {"maxNewTokens": 3}}, pb[0].Parameters()))
    assert [r.seed for r in stub.Generate(request).responses] == [99, 99, 99]


def test_repetition_and_length_penalties(pb, stub):
    base = generate(pb, stub, "The king and the king", stopping={"maxNewTokens": 12})
    strong = generate(pb, stub, "The king and the king", stopping={"maxNewTokens": 12},
                      decoding={"repetitionPenalty": 100})
    assert strong.generated_token_count >= 1
    seen = set(strong.text.split())
    assert len(seen) == len(strong.text.split())  # No word repeats under a huge penalty.
    boosted = generate(pb, stub, "The king and the king",
                       stopping={"maxNewTokens": 60, "minNewTokens": 2},
                       decoding={"lengthPenalty": {"startIndex": 2, "decayFactor": 10.0}})
    assert boosted.stop_reason == 2  # EOS pulled forward by the exponential boost.
    assert boosted.generated_token_count < 60 and base is not None


def test_top_k_below_top_n_gives_fewer_top_tokens(pb, stub):
    unary = generate(pb, stub, "Fire", method="SAMPLE", sampling={"topK": 2, "seed": 1},
                     stopping={"maxNewTokens": 3},
                     response={"generatedTokens": True, "topNTokens": 5, "tokenLogprobs": True})
    assert all(len(t.top_tokens) == 2 for t in unary.tokens)


def test_single_token_input_details_are_nan_only(pb, stub):
    unary = generate(pb, stub, "", stopping={"maxNewTokens": 1},
                     response={"inputTokens": True, "tokenLogprobs": True, "tokenRanks": True})
    assert len(unary.input_tokens) == 1
    only = unary.input_tokens[0]
    assert only.logprob != only.logprob and only.rank == 0 and len(only.top_tokens) == 0


def test_tokenize_variants(pb, stub):
    text = "the old king"
    def tokenize(**kw):
        return stub.Tokenize(pb[0].BatchedTokenizeRequest(
            requests=[pb[0].TokenizeRequest(text=text)], **kw)).responses[0]
    count_only = tokenize()
    assert count_only.token_count >= 3 and not count_only.tokens and not count_only.offsets
    both = tokenize(return_tokens=True, return_offsets=True)
    assert len(both.tokens) == len(both.offsets) == both.token_count
    assert (both.offsets[0].start, both.offsets[0].end) == (0, 0)  # BOS
    pieces = "".join(t for t in both.tokens[1:]).replace("\u2581", " ").strip()
    assert pieces == text
    offsets_only = tokenize(return_offsets=True)
    assert not offsets_only.tokens and len(offsets_only.offsets) == both.token_count



# Golden cases (TGIS's integration-test form): request -> expected response,
# recorded from this server on the gqa2 test model and checked on every run.
# The model's numerics are checked against transformers separately
# (model_parity_test.py); these pin the API layer. All cases are fired
# concurrently in random order, to run them through continuous batching.
# Regenerate after an intended change: FMS_UPDATE_GOLDEN=1 tools/test.

CASES = ROOT / "tests/cases/generation_cases.json"
GOLDEN = ROOT / "tests/cases/generation_cases.golden.json"


def same(a, b, path="$"):
    """JSON equality with floats to a relative 5e-4, NaN equal to NaN."""
    if isinstance(a, float) or isinstance(b, float):
        if a != a and b != b:
            return True
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), path
        assert abs(a - b) <= 5e-4 * max(abs(a), abs(b), 1e-6), f"{path}: {a} != {b}"
        return True
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: {a.keys()} != {b.keys()}"
        return all(same(a[k], b[k], f"{path}.{k}") for k in a)
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths"
        return all(same(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    assert a == b, f"{path}: {a!r} != {b!r}"
    return True


def run_case(pb, stub, case):
    if case.get("request_type") == "tokenize":
        request = json_format.ParseDict(case["request"], pb[0].BatchedTokenizeRequest())
        return json_format.MessageToDict(stub.Tokenize(request))
    request = json_format.ParseDict(case["request"], pb[0].BatchedGenerationRequest())
    return json_format.MessageToDict(stub.Generate(request))


def test_golden_cases_concurrently_and_streamed(pb, stub, test_models):
    import concurrent.futures
    import os
    import random
    cases = json.loads(CASES.read_text())
    random.Random(1).shuffle(cases)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = {c["name"]: pool.submit(run_case, pb, stub, c) for c in cases}
        got = {name: f.result() for name, f in futures.items()}
    models_key = pathlib.Path(test_models).name
    if os.environ.get("FMS_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({"test_models": models_key, "responses": got},
                                     indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert golden["test_models"] == models_key, (
        "the test checkpoints changed: regenerate with FMS_UPDATE_GOLDEN=1 tools/test")
    for case in cases:
        same(got[case["name"]], golden["responses"][case["name"]], case["name"])
        requests = case["request"].get("requests", [])
        if case.get("request_type") != "tokenize" and len(requests) == 1:
            params = case["request"].get("params", {})
            assert_stream_matches_unary(pb, stub, requests[0]["text"], **params)


