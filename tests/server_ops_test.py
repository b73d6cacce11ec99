"""fms-server's operations end to end: start-up failures, SIGTERM drain, TLS
and mTLS, health (gRPC and HTTP), metrics, logs, overload, concurrency, worker
processes that die or cannot load, reflection."""

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


def test_bad_model_path_exits_with_a_one_line_reason(test_models):
    process, _ = start_server(test_models, model="no-such-model")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-model/config.json" in lines[0], stderr


@pytest.mark.parametrize("shards", [1, 2])
def test_sigterm_drains_in_flight_streams_and_exits_zero(pb, health_pb, test_models, shards):
    # The grace only has to outlast the stream: generous, for sanitizer builds
    # (450 tokens took over 20 s under TSan).
    process, port = start_server(test_models, "--drain-grace-seconds=300",
                                 f"--num-shard={shards}", f"--master-port={free_port()}")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = wait_ready(pb, channel, process)
    workers = worker_pids(process)
    assert len(workers) == shards
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
    for pid in workers:  # And every worker is gone.
        assert subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0


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


def test_http_port_answers_probes_past_idle_and_slow_clients(stub):
    """50 connections that send nothing and 50 that drip a request header line by
    line ("slow loris") must not hold up /health and /metrics (kubelet gives a
    probe 1-10 s); the server closes them once its request time limit passes."""
    import socket
    import threading
    address = ("127.0.0.1", HTTP_PORT["main"])
    idle = [socket.create_connection(address) for _ in range(50)]
    loris = [socket.create_connection(address) for _ in range(50)]
    stop = threading.Event()

    def drip():
        for s in loris:
            s.sendall(b"GET /health HTTP/1.1\r\n")
        while not stop.wait(0.3):
            for s in loris:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    time.sleep(0.3)
    try:
        slowest = 0.0
        for path in ["/health", "/metrics"] * 10:
            start = time.time()
            status, _ = http_get(path)
            slowest = max(slowest, time.time() - start)
            assert status == 200, path
        assert slowest < 0.1, f"slowest answer {slowest * 1000:.0f} ms"
        # Every hostile connection is closed by the server within its time limit
        # (2 s), well before this test's 10 s.
        for s in idle + loris:
            s.settimeout(10)
        started = time.time()
        for s in idle + loris:
            try:
                while s.recv(4096):
                    pass  # A slow client may get a 4xx before the close.
            except ConnectionResetError:
                pass
        assert time.time() - started < 10
    finally:
        stop.set()
        dripper.join()
        for s in idle + loris:
            s.close()


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
            if kind == 3:  # Tight deadlines: they pass, or the call is shed up front
                try:            # because the queue would outlast them (admission.h).
                    list(stub.GenerateStream(request, timeout=0.05))
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED or (
                        e.code(), e.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                   "Model is overloaded")
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


def test_a_call_whose_deadline_the_queue_would_outlast_is_shed_at_once(pb, test_models):
    """DeadlineAdmission (server/admission.h): with one sequence per batch, a finished
    500-token request teaches the server how long an input takes; then, while another
    such request runs, a call with a 1.5-inference deadline cannot finish in time and gets
    RESOURCE_EXHAUSTED at once instead of waiting for DEADLINE_EXCEEDED; calls with a
    long deadline or none are admitted and served."""
    process, port = start_server(test_models, "--max-batch-size=1", "--max-new-tokens=500")
    stub = wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    long = json_format.ParseDict({"stopping": {"maxNewTokens": 500, "minNewTokens": 500}},
                                 pb[0].Parameters())
    request = pb[0].BatchedGenerationRequest(
        requests=[pb[0].GenerationRequest(text="Stone")], params=long)
    try:
        start = time.time()
        stub.Generate(request)  # The first inference time.
        one_input_s = time.time() - start
        busy = stub.Generate.future(request)
        time.sleep(min(0.2, one_input_s / 4))  # Admitted and running.
        # The queue needs about two inference times (the busy one's rest and
        # its own): a deadline of 1.5 (at most 200 ms) cannot be met, however
        # fast this build decodes the 500 tokens.
        deadline_s = min(0.2, 1.5 * one_input_s)
        with pytest.raises(grpc.RpcError) as error:  # Not DEADLINE_EXCEEDED at the deadline.
            stub.Generate(request, timeout=deadline_s)
        assert (error.value.code(), error.value.details()) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED, "Model is overloaded")
        short = pb[0].BatchedGenerationRequest(
            requests=[pb[0].GenerationRequest(text="Water")],
            params=pb[0].Parameters(stopping=pb[0].StoppingCriteria(max_new_tokens=2)))
        # Long: well past two inference times, however slow this build (TSan's
        # 500 tokens take over 30 s).
        long_s = max(60.0, 4 * one_input_s)
        assert stub.Generate(short, timeout=long_s).responses[0].generated_token_count == 2
        assert stub.Generate(short).responses[0].generated_token_count == 2
        busy.result(timeout=long_s)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_num_shard_that_does_not_divide_the_model_is_refused_clearly(test_models):
    process, _ = start_server(test_models, "--num-shard=3", f"--master-port={free_port()}",
                              model="mha")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "config.json: num_attention_heads 4 cannot be split over NUM_SHARD=3 workers" in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_a_busy_master_port_stops_start_up_with_one_line(test_models):
    with socket.socket() as busy:  # Something else holds MASTER_PORT.
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process, _ = start_server(test_models, "--num-shard=2", f"--master-port={port}")
        _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert (f"fms-worker rank 0: cannot join the process group at localhost:{port} as rank 0 "
            "of 2:") in stderr and "address already in use" in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize("shards,victim", [(1, 0), (2, 0), (2, 1)])
def test_killed_worker_fails_streams_then_the_group_restarts(pb, health_pb, test_models,
                                                             shards, victim):
    process, port = start_server(test_models, "--max-new-tokens=500",
                                 f"--num-shard={shards}", f"--master-port={free_port()}")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = wait_ready(pb, channel, process)
    workers = worker_pids(process)
    assert len(workers) == shards  # One fms-worker process per rank.
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
    subprocess.run(["kill", "-9", workers[victim]], check=True)
    for call in calls:
        with pytest.raises(grpc.RpcError) as error:
            list(call)
        assert error.value.code() == grpc.StatusCode.UNKNOWN
        # Which rank's failure arrives first is a race when several go down.
        assert error.value.details().startswith("Request failed during generation: rank ")
    assert time.time() - start < 5
    # Health goes NOT_SERVING, then SERVING again once a new worker is up.
    deadline = time.time() + 30
    while not ("NOT_SERVING" in seen and seen[-1] == "SERVING"):
        assert time.time() < deadline, (seen, process.poll())
        time.sleep(0.05)
    watch.cancel()
    assert generate(pb, stub, "After", stopping={"maxNewTokens": 3}).generated_token_count == 3
    new_workers = worker_pids(process)
    assert len(new_workers) == shards and not set(new_workers) & set(workers)
    process.terminate()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "worker exited" in out and f"rank {victim} exited with signal 9" in out
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
        [str(BAZEL_BIN / "server" / "fms-server"), "--model-name=/no/such/model",
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
        [str(BAZEL_BIN / "server" / "fms-server"), f"--model-name={model}",
         f"--grpc-port={free_port()}", f"--port={free_port()}"],
        capture_output=True, text=True, timeout=120)
    assert process.returncode == 1
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert "rank 0 exited with exit code 1" in lines[0] and name in lines[0], lines[0]
    if damage == "shape mismatch":
        assert "model.safetensors" in lines[0] and "has shape [4, 64]" in lines[0], lines[0]



def test_keepalive_pings_every_21_seconds_are_accepted(pb, test_models):
    """A client pinging every 21 s without calls in flight keeps its connection:
    no GOAWAY too_many_pings, which would move the channel READY -> IDLE (seen
    when the server's minimum ping interval was set to 60 s instead of 20 s),
    so clients' usual 25 s keepalive works."""
    process, port = start_server(test_models)
    options = [("grpc.keepalive_time_ms", 21000), ("grpc.keepalive_timeout_ms", 5000),
               ("grpc.keepalive_permit_without_calls", 1),
               ("grpc.http2.max_pings_without_data", 0)]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    stub = wait_ready(pb, channel, process)
    states = []
    channel.subscribe(lambda state: states.append(state.name))
    time.sleep(70)  # Three pings: gRPC's default policy answers the third with GOAWAY.
    assert states == ["READY"], states
    assert stub.ModelInfo(pb[0].ModelInfoRequest(), timeout=5).max_new_tokens > 0
    process.terminate()
    assert process.wait(timeout=30) == 0
