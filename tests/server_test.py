"""fms-server end to end: the real binary on a tiny test model, driven by the
Python grpcio client with stubs generated from proto/generation.proto.

Validation cases live in tests/cases/validation_errors.json (request ->
gRPC code and exact message); behaviours are checked against the model:
every single-input Generate case is also run through GenerateStream and the
streamed text must equal the unary text."""

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

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_SEQ, MAX_NEW = 128, 100


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(ROOT / "proto" / "generation.proto")]) == 0
    for extra in ("health.proto", "reflection.proto"):
        assert protoc.main(["protoc", f"-I{ROOT / 'tests' / 'cases'}", f"--python_out={out}",
                            f"--grpc_python_out={out}", str(ROOT / "tests/cases" / extra)]) == 0
    sys.path.insert(0, str(out))
    import generation_pb2
    import generation_pb2_grpc
    return generation_pb2, generation_pb2_grpc


@pytest.fixture(scope="session")
def health_pb(pb):
    import health_pb2
    import health_pb2_grpc
    return health_pb2, health_pb2_grpc


def health(health_pb, channel, service=""):
    stub = health_pb[1].HealthStub(channel)
    return health_pb[0].HealthCheckResponse.ServingStatus.Name(
        stub.Check(health_pb[0].HealthCheckRequest(service=service), timeout=5).status)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HTTP_PORT = {}


@pytest.fixture(scope="session")
def stub(pb, test_models):
    port = free_port()
    HTTP_PORT["main"] = free_port()
    HTTP_PORT["grpc"] = port
    server = subprocess.Popen(
        [str(ROOT / "bazel-bin" / "server" / "fms-server"),
         f"--model-name={test_models / 'gqa2'}", f"--grpc-port={port}",
         f"--port={HTTP_PORT['main']}",
         f"--max-sequence-length={MAX_SEQ}", f"--max-new-tokens={MAX_NEW}",
         "--max-batch-size=8"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb[1].GenerationServiceStub(channel)
    deadline = time.time() + 60
    while True:
        try:
            stub.ModelInfo(pb[0].ModelInfoRequest(), timeout=1)
            break
        except grpc.RpcError:
            assert server.poll() is None, server.stdout.read()
            assert time.time() < deadline, "server did not start"
            time.sleep(0.2)
    yield stub
    server.terminate()
    assert server.wait(timeout=30) == 0


def generate(pb, stub, text, **params):
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text=text)],
        params=json_format.ParseDict(params, pb[0].Parameters()))
    return stub.Generate(request).responses[0]


def stream(pb, stub, text, **params):
    request = pb[0].SingleGenerationRequest(
        request=pb[0].GenerationRequest(text=text),
        params=json_format.ParseDict(params, pb[0].Parameters()))
    return list(stub.GenerateStream(request))


def assert_stream_matches_unary(pb, stub, text, **params):
    unary = generate(pb, stub, text, **params)
    messages = stream(pb, stub, text, **params)
    first, rest = messages[0], messages[1:]
    assert first.input_token_count == unary.input_token_count
    assert first.stop_reason == 0 and first.generated_token_count == 0
    echo = text if params.get("response", {}).get("inputText") else ""
    assert first.text == echo
    assert echo + "".join(m.text for m in rest) == unary.text
    final = messages[-1]
    assert final.stop_reason == unary.stop_reason
    assert final.generated_token_count == unary.generated_token_count
    for m in rest[:-1]:
        # Empty deltas are suppressed; the input-tokens message carries only those.
        assert m.stop_reason == 0 and (m.text or m.tokens or m.input_tokens)
    return unary, messages


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


_STARTED = []


@pytest.fixture(autouse=True)
def _stop_started_servers():
    yield
    while _STARTED:  # Servers a failed test left running.
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def start_server(test_models, *flags, model="gqa2", per_test=True):
    """Starts fms-server; `per_test` servers are killed after the test if it
    left them running (a failed assertion before their own clean-up)."""
    port = free_port()
    process = subprocess.Popen(
        [str(ROOT / "bazel-bin" / "server" / "fms-server"),
         f"--model-name={test_models / model}", f"--grpc-port={port}",
         f"--port={free_port()}", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if per_test:
        _STARTED.append(process)
    return process, port


def wait_ready(pb, channel, process):
    stub = pb[1].GenerationServiceStub(channel)
    deadline = time.time() + 60
    while True:
        try:
            stub.ModelInfo(pb[0].ModelInfoRequest(), timeout=1)
            return stub
        except grpc.RpcError:
            assert process.poll() is None, process.stderr.read()
            assert time.time() < deadline
            time.sleep(0.2)


def test_bad_model_path_exits_with_a_one_line_reason(test_models):
    process, _ = start_server(test_models, model="no-such-model")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-model/config.json" in lines[0], stderr


def test_sigterm_drains_in_flight_streams_and_exits_zero(pb, health_pb, test_models):
    process, port = start_server(test_models, "--drain-grace-seconds=20")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = wait_ready(pb, channel, process)
    assert health(health_pb, channel) == "SERVING"
    assert health(health_pb, channel, "fmaas.GenerationService") == "SERVING"
    call = stub.GenerateStream(pb[0].SingleGenerationRequest(
        request=pb[0].GenerationRequest(text="The king"),
        params=json_format.ParseDict({"stopping": {"maxNewTokens": 450, "minNewTokens": 450}},
                                     pb[0].Parameters())))
    next(call)  # In flight: 450 tokens keep it busy for a second or more.
    process.send_signal(15)
    deadline = time.time() + 10
    while health(health_pb, channel) != "NOT_SERVING":  # Draining.
        assert time.time() < deadline
        time.sleep(0.02)
    with pytest.raises(grpc.RpcError) as refused:  # New work is refused...
        generate(pb, stub, "late")
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
    messages = list(call)  # ... while the in-flight stream finishes normally.
    assert messages[-1].generated_token_count == 450 and messages[-1].stop_reason == 1
    assert process.wait(timeout=30) == 0
    with pytest.raises(grpc.RpcError):  # Nothing listens any more.
        stub.ModelInfo(pb[0].ModelInfoRequest(), timeout=2)


def make_certificates(tmp):
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (tmp / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", f"{name}.pem")
    return {n: (tmp / n).read_bytes() for n in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_tls_and_mtls(pb, test_models, tmp_path):
    certs = make_certificates(tmp_path)
    process, port = start_server(
        test_models, f"--tls-cert-path={tmp_path / 'server.pem'}",
        f"--tls-key-path={tmp_path / 'server.key'}",
        f"--tls-client-ca-cert-path={tmp_path / 'ca.pem'}")
    try:
        with_cert = grpc.ssl_channel_credentials(certs["ca.pem"], certs["client.key"],
                                                 certs["client.pem"])
        stub = wait_ready(pb, grpc.secure_channel(f"localhost:{port}", with_cert), process)
        assert stub.ModelInfo(pb[0].ModelInfoRequest()).max_new_tokens > 0
        without_cert = grpc.ssl_channel_credentials(certs["ca.pem"])
        refused = pb[1].GenerationServiceStub(grpc.secure_channel(f"localhost:{port}",
                                                                  without_cert))
        with pytest.raises(grpc.RpcError) as error:
            refused.ModelInfo(pb[0].ModelInfoRequest(), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        plaintext = pb[1].GenerationServiceStub(grpc.insecure_channel(f"localhost:{port}"))
        with pytest.raises(grpc.RpcError):
            plaintext.ModelInfo(pb[0].ModelInfoRequest(), timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)


def http_get(path):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT['main']}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name):
    """Sum of the samples of `name` (any labels) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_http_health_and_metrics_after_traffic(pb, stub):
    assert http_get("/health") == (200, "")
    assert http_get("/nope")[0] == 404
    generate(pb, stub, "The water", stopping={"maxNewTokens": 3})
    stub.Tokenize(pb[0].BatchedTokenizeRequest(requests=[pb[0].TokenizeRequest(text="a b")]))
    with pytest.raises(grpc.RpcError):
        generate(pb, stub, "x", stopping={"maxNewTokens": 9999})
    status, text = http_get("/metrics")
    assert status == 200
    for family in ["tgi_request_count", "tgi_request_count_total", "tgi_request_input_count",
                   "tgi_request_success", "tgi_request_generated_tokens_count",
                   "tgi_request_input_length_sum", "tgi_request_queue_duration_bucket",
                   "tgi_request_duration_count", "tgi_batch_inference_duration_count",
                   "tgi_tokenize_request_count", "tgi_tokenize_request_tokens_count",
                   "fms_time_to_first_token_seconds_count",
                   "fms_inter_token_latency_seconds_count", "fms_kv_cache_free_blocks"]:
        assert metric(text, family) > 0, family
    for gauge in ["tgi_queue_size", "tgi_batch_current_size"]:  # Zero when idle.
        assert f"\n{gauge} " in text, gauge
    assert 'tgi_request_failure{err="validation"}' in text


def test_64_concurrent_mixed_requests_with_cancellations(pb, stub):
    import random
    import threading
    rng = random.Random(3)
    seeded = {"method": "SAMPLE", "sampling": {"seed": 7, "temperature": 0.8},
              "stopping": {"maxNewTokens": 16, "minNewTokens": 16}}
    alone = generate(pb, stub, "The queen", **seeded).text
    results, errors = {}, []

    def worker(i):
        try:
            kind = i % 4
            params = seeded if kind == 0 else {
                "method": "SAMPLE" if kind == 1 else "GREEDY",
                "stopping": {"maxNewTokens": rng.randint(1, 60)}}
            request = pb[0].SingleGenerationRequest(
                request=pb[0].GenerationRequest(text="The queen" if kind == 0 else f"Stone {i}"),
                params=json_format.ParseDict(params, pb[0].Parameters()))
            if kind == 2:  # Streams cancelled by the client part way.
                call = stub.GenerateStream(request)
                next(call)
                call.cancel()
                return
            if kind == 3:  # Tight deadlines.
                try:
                    list(stub.GenerateStream(request, timeout=0.05))
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                return
            batch = pb[0].BatchedGenerationRequest(requests=[request.request], params=request.params)
            results[i] = stub.Generate(batch).responses[0].text
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert all(results[i] == alone for i in range(0, 64, 4))  # Seeded: same as alone.
    assert generate(pb, stub, "Still", stopping={"maxNewTokens": 2}).generated_token_count >= 1
    deadline = time.time() + 10
    while True:  # Every KV block returns to the pool.
        text = http_get("/metrics")[1]
        if metric(text, "fms_kv_cache_free_blocks") == metric(text, "fms_kv_cache_blocks"):
            break
        assert time.time() < deadline, "KV blocks leaked"
        generate(pb, stub, "tick", stopping={"maxNewTokens": 1})  # A step refreshes the gauge.
        time.sleep(0.1)


# More of TGIS's integration behaviours (tgis-api.md section 6).

def test_empty_request_and_empty_input(pb, stub):
    assert len(stub.Generate(pb[0].BatchedGenerationRequest()).responses) == 0
    unary, _ = assert_stream_matches_unary(pb, stub, "", stopping={"maxNewTokens": 3})
    assert unary.input_token_count == 1  # BOS only.


def test_max_new_tokens_one(pb, stub):
    unary, messages = assert_stream_matches_unary(pb, stub, "Bread", stopping={"maxNewTokens": 1})
    assert unary.generated_token_count == 1


@pytest.fixture(scope="module")
def long_stub(pb, test_models):
    """A server allowing 500 new tokens: long enough to outlast a 200 ms limit."""
    process, port = start_server(test_models, "--max-new-tokens=500", per_test=False)
    yield wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.parametrize("limit_ms", [1, 200])
def test_time_limit(pb, long_stub, limit_ms):
    stub = long_stub
    params = {"stopping": {"maxNewTokens": 500, "minNewTokens": 500, "timeLimitMillis": limit_ms}}
    for run in ("unary", "stream"):
        start = time.time()
        if run == "unary":
            response = generate(pb, stub, "The long river", **params)
        else:
            response = stream(pb, stub, "The long river", **params)[-1]
        elapsed = time.time() - start
        assert response.stop_reason == 4  # TIME_LIMIT
        assert response.generated_token_count >= (2 if limit_ms == 200 else 1)
        assert elapsed < limit_ms / 1000 + 0.3


def test_truncate_input_tokens_with_input_echo(pb, stub):
    text = " ".join(["water"] * 80)
    unary = generate(pb, stub, text, truncateInputTokens=10, stopping={"maxNewTokens": 2},
                     response={"inputText": True, "inputTokens": True})
    assert unary.input_token_count == 10
    assert unary.text.startswith(text)  # The echo is the untruncated text.
    assert unary.input_tokens[0].text == "<s>"  # The first kept position becomes BOS.


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


def test_json_logs_carry_the_correlation_id(pb, test_models):
    process, port = start_server(test_models, "--json-output", "--log-level=info")
    stub = wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text="Winter")],
        params=json_format.ParseDict({"stopping": {"maxNewTokens": 3}}, pb[0].Parameters()))
    stub.Generate(request, metadata=(("x-correlation-id", "corr-123"),))
    process.terminate()
    out, _ = process.communicate(timeout=30)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]  # All JSON.
    mine = [l for l in lines if l.get("correlation_id") == "corr-123"]
    assert len(mine) == 1, lines
    assert mine[0]["method"] == "Generate" and mine[0]["generated_tokens"] >= 1
    assert mine[0]["level"] == "info" and "timestamp" in mine[0]
    assert any(l.get("message") == "serving" for l in lines)


def test_overload_and_oversized_messages(pb, test_models):
    process, port = start_server(test_models, "--max-concurrent-requests=1",
                                 "--max-new-tokens=500")
    stub = wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    try:
        long_call = stub.GenerateStream(pb[0].SingleGenerationRequest(
            request=pb[0].GenerationRequest(text="Stone"),
            params=json_format.ParseDict({"stopping": {"maxNewTokens": 500, "minNewTokens": 500}},
                                         pb[0].Parameters())))
        next(long_call)  # Holds the only permit.
        with pytest.raises(grpc.RpcError) as error:  # Fails at once, no queueing.
            generate(pb, stub, "Water", stopping={"maxNewTokens": 2})
        assert (error.value.code(), error.value.details()) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED, "Model is overloaded")
        long_call.cancel()
        with pytest.raises(grpc.RpcError) as error:  # Over gRPC's 4 MiB message limit.
            generate(pb, stub, "x" * (5 << 20))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        deadline = time.time() + 10
        while True:  # The permit comes back once the cancel lands.
            try:
                assert generate(pb, stub, "Water", stopping={"maxNewTokens": 2}).generated_token_count
                break
            except grpc.RpcError:
                assert time.time() < deadline
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_num_shard_above_one_is_refused_clearly(test_models):
    process, _ = start_server(test_models, "--num-shard=2")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "NUM_SHARD > 1" in stderr


def test_killed_worker_fails_streams_then_the_group_restarts(pb, health_pb, test_models):
    process, port = start_server(test_models, "--max-new-tokens=500")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = wait_ready(pb, channel, process)
    workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                             text=True).stdout.split()
    assert len(workers) == 1  # NUM_SHARD=1: one fms-worker process.
    calls = [stub.GenerateStream(pb[0].SingleGenerationRequest(
        request=pb[0].GenerationRequest(text=f"Stone {i}"),
        params=json_format.ParseDict({"stopping": {"maxNewTokens": 500, "minNewTokens": 500}},
                                     pb[0].Parameters()))) for i in range(8)]
    for call in calls:
        next(call)
    import threading
    seen = []  # Health as a Watch stream reports it.
    watch = health_pb[1].HealthStub(channel).Watch(health_pb[0].HealthCheckRequest())

    def follow():
        try:
            for update in watch:
                seen.append(health_pb[0].HealthCheckResponse.ServingStatus.Name(update.status))
        except grpc.RpcError:
            pass
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    start = time.time()
    subprocess.run(["kill", "-9", workers[0]], check=True)
    for call in calls:
        with pytest.raises(grpc.RpcError) as error:
            list(call)
        assert error.value.code() == grpc.StatusCode.UNKNOWN
        assert error.value.details().startswith("Request failed during generation: rank 0")
    assert time.time() - start < 5
    # Health goes NOT_SERVING, then SERVING again once a new worker is up.
    deadline = time.time() + 30
    while not ("NOT_SERVING" in seen and seen[-1] == "SERVING"):
        assert time.time() < deadline, (seen, process.poll())
        time.sleep(0.05)
    watch.cancel()
    assert generate(pb, stub, "After", stopping={"maxNewTokens": 3}).generated_token_count == 3
    new_workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                 text=True).stdout.split()
    assert len(new_workers) == 1 and new_workers != workers
    process.terminate()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "worker exited" in out and "rank 0 exited with signal 9" in out
    assert "workers restarted" in out
    for pid in new_workers:  # No orphan survives the front end.
        assert subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0


def test_health_is_not_serving_while_the_model_loads(pb, health_pb, test_models):
    process, port = start_server(test_models)
    deadline = time.time() + 60
    while True:  # Wait for the port with plain sockets: no gRPC reconnect backoff.
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.002)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb[1].HealthStub(channel)
    seen = []
    deadline = time.time() + 60
    while not seen or seen[-1] != "SERVING":
        assert time.time() < deadline and process.poll() is None, seen
        try:
            status = stub.Check(health_pb[0].HealthCheckRequest(
                service="fmaas.GenerationService"), timeout=1).status
            seen.append(health_pb[0].HealthCheckResponse.ServingStatus.Name(status))
        except grpc.RpcError:
            pass  # Not listening yet.
        time.sleep(0.005)
    # The gRPC port answers before the worker has loaded the model.
    assert seen[0] == "NOT_SERVING", seen
    process.terminate()
    assert process.wait(timeout=30) == 0


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


def test_server_reflection_lists_the_services(pb, stub):
    import reflection_pb2
    import reflection_pb2_grpc
    channel = grpc.insecure_channel(f"127.0.0.1:{HTTP_PORT['grpc']}")
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="*")])))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"fmaas.GenerationService", "grpc.health.v1.Health"} <= names
    files = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="fmaas.GenerationService")])))
    assert files[0].file_descriptor_response.file_descriptor_proto  # ghz/grpcurl need no -proto


def test_fatal_start_up_error_goes_to_the_termination_log(test_models, tmp_path):
    log = tmp_path / "termination-log"
    log.write_text("")  # Kubernetes creates it; the server never does.
    port = free_port()
    process = subprocess.run(
        [str(ROOT / "bazel-bin" / "server" / "fms-server"), "--model-name=/no/such/model",
         f"--grpc-port={port}", f"--port={free_port()}"],
        env={**os.environ, "FMS_TERMINATION_LOG": str(log)}, capture_output=True, text=True,
        timeout=60)
    assert process.returncode == 1
    assert log.read_text().strip() == process.stderr.strip()
    assert "/no/such/model/config.json" in log.read_text()


@pytest.mark.parametrize("damage", ["missing tensor", "shape mismatch"])
def test_worker_that_cannot_load_stops_start_up_naming_file_and_tensor(test_models, tmp_path,
                                                                       damage):
    import shutil
    import torch
    from safetensors.torch import load_file, save_file
    model = tmp_path / "model"
    shutil.copytree(test_models / "gqa2", model)
    tensors = load_file(model / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    if damage == "missing tensor":
        del tensors[name]
    else:
        tensors[name] = torch.zeros(4, tensors[name].shape[1])
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    process = subprocess.run(
        [str(ROOT / "bazel-bin" / "server" / "fms-server"), f"--model-name={model}",
         f"--grpc-port={free_port()}", f"--port={free_port()}"],
        capture_output=True, text=True, timeout=120)
    assert process.returncode == 1
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert "rank 0 exited with exit code 1" in lines[0] and name in lines[0], lines[0]
    if damage == "shape mismatch":
        assert "model.safetensors" in lines[0] and "has shape [4, 64]" in lines[0], lines[0]
