"""Helpers and fixtures for the end-to-end tests of fms-server (the real binary
on a tiny test model, driven by the Python grpcio client with stubs generated
from proto/generation.proto). The fixtures are registered in conftest.py."""

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

from conftest import BAZEL_BIN, ROOT

MAX_SEQ, MAX_NEW = 128, 100


def pb(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(ROOT / "proto" / "generation.proto")]) == 0
    for folder, extra in (("proto", "health.proto"), ("tests/cases", "reflection.proto")):
        assert protoc.main(["protoc", f"-I{ROOT / folder}", f"--python_out={out}",
                            f"--grpc_python_out={out}", str(ROOT / folder / extra)]) == 0
    sys.path.insert(0, str(out))
    import generation_pb2
    import generation_pb2_grpc
    return generation_pb2, generation_pb2_grpc


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


def stub(pb, test_models):
    port = free_port()
    HTTP_PORT["main"] = free_port()
    HTTP_PORT["grpc"] = port
    server = subprocess.Popen(
        [str(BAZEL_BIN / "server" / "fms-server"),
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



_STARTED = []


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
        [str(BAZEL_BIN / "server" / "fms-server"),
         f"--model-name={test_models / model}", f"--grpc-port={port}",
         f"--port={free_port()}", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if per_test:
        _STARTED.append(process)
    return process, port


def worker_pids(process):
    """The fms-worker processes of a server, in rank order (spawned in order)."""
    pids = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                          text=True).stdout.split()
    return sorted(pids, key=int)


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



def long_stub(pb, test_models):
    """A server allowing 500 new tokens, for the time-limit tests."""
    process, port = start_server(test_models, "--max-new-tokens=500", per_test=False)
    yield wait_ready(pb, grpc.insecure_channel(f"127.0.0.1:{port}"), process)
    process.terminate()
    process.wait(timeout=30)


