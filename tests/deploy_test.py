"""deploy/ checked offline: every kustomize overlay renders and validates strictly
(tools/deploy/validate.py), the manifests agree with the binaries they start, and
one pod's life is replayed from the rendered Deployment: fms-server started with
exactly the container's command, args and environment, its startup, readiness and
liveness probes run as kubelet runs them through start-up and a worker kill, then
preStop and SIGTERM with streams in flight."""

import copy
import re
import subprocess
import sys
import threading
import time

import grpc
import pytest
import yaml
from google.protobuf import json_format

from conftest import BAZEL_BIN, ROOT
from kubelet import ContainerHost, ProbeWorker, run_probe
from server_harness import free_port, worker_pids

sys.path.insert(0, str(ROOT))
from tools.deploy import cache, kserve_schema, validate  # noqa: E402

BIN = {"fms-server": str(BAZEL_BIN / "server" / "fms-server"),
       "text-generation-launcher": str(BAZEL_BIN / "server" / "fms-server"),
       "fms-health": str(BAZEL_BIN / "server" / "fms-health")}


@pytest.fixture(scope="module")
def kserve_models():
    return kserve_schema.load(cache.kserve_wheel())


@pytest.fixture(scope="module")
def rendered():
    return {overlay: validate.render(overlay) for overlay in validate.OVERLAYS}


def find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def kserve(name):
    return yaml.safe_load((ROOT / "deploy/kserve" / name).read_text())


@pytest.mark.parametrize("version", validate.VERSIONS)
def test_every_object_validates_strictly(kserve_models, version):
    objects = validate.all_objects()
    kinds = {o["kind"] for _, o in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceMonitor",
            "HorizontalPodAutoscaler", "ServingRuntime", "InferenceService"} <= kinds
    errors = {f"{source} {o['kind']}": validate.check_object(o, kserve_models, version)
              for source, o in objects}
    assert not any(errors.values()), errors


def test_validation_refuses_unknown_fields_and_wrong_types(kserve_models, rendered):
    deployment = find(rendered["cpu"], "Deployment")
    container = ["spec", "template", "spec", "containers", 0]
    cases = [
        (deployment, container + ["readinessProbe"], "grcp", {}),
        (deployment, ["spec"], "replica", 2),
        (kserve("servingruntime.yaml"), ["spec"], "multimodel", False),
        (kserve("servingruntime.yaml"), ["spec", "containers", 0], "readynessProbe", {}),
        (kserve("servingruntime.yaml"), ["spec", "containers", 0, "ports", 0],
         "containerPort", "8033"),
        (kserve("inferenceservice.yaml"), ["spec", "predictor", "model"], "storageURI", "s3://x"),
    ]
    for obj, path, key, value in cases:
        broken = copy.deepcopy(obj)
        node = broken
        for step in path:
            node = node[step]
        node[key] = value
        errors = validate.check_object(broken, kserve_models, validate.VERSIONS[-1])
        assert errors and key in " ".join(errors), (key, errors)


def test_kubectl_kustomize_renders_the_same():
    kubectl = subprocess.run(["which", "kubectl"], capture_output=True, text=True).stdout.strip()
    if not kubectl:
        pytest.skip("no kubectl on this machine; the pinned kustomize rendered the overlays")
    for overlay in validate.OVERLAYS:
        by_kubectl = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy/kubernetes/overlays"
                                                          / overlay)],
                                    check=True, capture_output=True, text=True).stdout
        assert by_kubectl == validate.render_text(overlay), overlay


def server_env_names():
    help_text = subprocess.run([BIN["fms-server"], "--help"], capture_output=True,
                               text=True).stdout
    return set(re.findall(r"\[env: ([A-Z_]+)\]", help_text)), set(
        re.findall(r"--([a-z-]+)[=\[]", help_text))


def check_container_matches_binary(container, env_names, flags):
    assert container["command"][0] in ("fms-server", "text-generation-launcher")
    for arg in container["args"]:
        assert arg.startswith("--") and arg[2:].split("=")[0] in flags, arg
    for item in container.get("env", []):
        assert item["name"] in env_names, item["name"]
    args = dict(a[2:].split("=", 1) for a in container["args"])
    ports = {p["containerPort"] for p in container["ports"]}
    assert int(args["grpc-port"]) in ports
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container.get(probe, {}).get("exec", {}).get("command")
        if command:
            assert command[0] in BIN, command
            # It parses (exit 2 would say not); nothing listens on port 1: exit 1.
            assert subprocess.run([BIN[command[0]], *command[1:], "--port=1", "--grpc-port=1"],
                                  capture_output=True).returncode == 1


def test_manifests_agree_with_the_binaries(rendered):
    env_names, flags = server_env_names()
    assert {"NUM_SHARD", "DRAIN_GRACE_SECONDS", "DTYPE_STR"} <= env_names
    for overlay, objects in rendered.items():
        deployment = find(objects, "Deployment")
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        check_container_matches_binary(container, env_names, flags)
        config = find(objects, "ConfigMap")["data"]
        assert set(config) <= env_names, set(config) - env_names
        assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == next(
            p["containerPort"] for p in container["ports"] if p["name"] == "http")
        # kubelet's SIGKILL must not cut the drain: grace > preStop + drain.
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["spec"]["terminationGracePeriodSeconds"] > (
            pre_stop + int(config["DRAIN_GRACE_SECONDS"])), overlay
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        assert config.get("NUM_SHARD", "1") == (gpus or "1"), overlay
    check_container_matches_binary(kserve("servingruntime.yaml")["spec"]["containers"][0],
                                   env_names, flags)


def test_serving_runtime_is_a_drop_in_for_tgis():
    """The facts of Open Data Hub's tgis-grpc-runtime (odh-model-controller:
    config/runtimes/tgis-template.yaml)."""
    spec = kserve("servingruntime.yaml")["spec"]
    container = spec["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["args"] == ["--model-name=/mnt/models/", "--port=3000", "--grpc-port=8033"]
    assert {"containerPort": 8033, "name": "h2c", "protocol": "TCP"} in container["ports"]
    assert spec["annotations"] == {"prometheus.io/port": "3000", "prometheus.io/path": "/metrics"}
    assert spec["multiModel"] is False
    assert {"autoSelect": True, "name": "pytorch"} in spec["supportedModelFormats"]
    service = kserve("inferenceservice.yaml")["spec"]["predictor"]["model"]
    assert service["modelFormat"]["name"] == "pytorch"
    assert service["runtime"] == kserve("servingruntime.yaml")["metadata"]["name"]


def test_dashboard_metrics_have_tgis_names_types_and_labels(pb, stub):
    """The series Open Data Hub's dashboards and the HPA query."""
    from server_harness import HTTP_PORT, generate
    import urllib.request
    generate(pb, stub, "Dashboards", stopping={"maxNewTokens": 3})
    with pytest.raises(grpc.RpcError):
        generate(pb, stub, "Dashboards", stopping={"maxNewTokens": 3, "minNewTokens": 5})
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT['main']}/metrics") as reply:
        text = reply.read().decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types["tgi_request_success"] == "counter"
    assert types["tgi_request_failure"] == "counter"
    assert types["tgi_request_duration"] == "histogram"
    assert types["tgi_request_inference_duration"] == "histogram"
    assert types["tgi_queue_size"] == "gauge"
    # A one-input Generate is kind "single" in TGIS.
    assert re.search(r'^tgi_request_success\{kind="single",stop_reason="MAX_TOKENS"\} [1-9]',
                     text, re.M), text
    assert re.search(r'^tgi_request_failure\{err="validation"\} [1-9]', text, re.M)
    count = re.search(r"^tgi_request_inference_duration_count (\d+)", text, re.M)
    assert count and int(count.group(1)) >= 1
    inference = float(re.search(r"^tgi_request_inference_duration_sum (\S+)", text, re.M)[1])
    total = float(re.search(r"^tgi_request_duration_sum (\S+)", text, re.M)[1])
    assert 0 < inference <= total


class Pod:
    """The rendered cpu overlay's pod, run on this machine: the container's
    command, args and environment (envFrom its ConfigMap, then env) with two
    mappings only, the model path (/mnt/models/ -> the test model) and the
    ports (each containerPort -> a free host port, as a pod network would)."""

    def __init__(self, objects, test_models, health_pb):
        self.deployment = find(objects, "Deployment")
        self.spec = self.deployment["spec"]["template"]["spec"]
        self.container = self.spec["containers"][0]
        env = dict(find(objects, "ConfigMap", self.container["envFrom"][0]["configMapRef"][
            "name"])["data"])
        env.update({e["name"]: e["value"] for e in self.container.get("env", [])})
        ports = {}
        for port in self.container["ports"]:
            ports[port["containerPort"]] = ports[port["name"]] = free_port()
        self.host = ContainerHost(ports=ports, commands=BIN, health_pb=health_pb,
                                  env={"PATH": "/usr/bin:/bin", **env,
                                       "PORT": str(ports[3000]), "GRPC_PORT": str(ports[8033])})
        self.argv = [BIN[self.container["command"][0]]]
        for arg in self.container["args"]:
            arg = arg.replace("=/mnt/models/", f"={test_models / 'gqa2'}/")
            for container_port in (8033, 3000):
                arg = arg.replace(f"={container_port}", f"={ports[container_port]}")
            self.argv.append(arg)
        self.env = {"PATH": "/usr/bin:/bin", **env}
        self.process = None

    def start(self):
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.started = time.time()

    def probe(self, name, start_ok):
        return ProbeWorker(name, self.container[name], self.host, start_ok).start()

    def grpc_channel(self):
        return grpc.insecure_channel(f"127.0.0.1:{self.host.port(8033)}")


def long_stream(pb, stub, tokens):
    params = json_format.ParseDict({"stopping": {"maxNewTokens": tokens,
                                                 "minNewTokens": tokens}}, pb[0].Parameters())
    return stub.GenerateStream(pb[0].SingleGenerationRequest(
        request=pb[0].GenerationRequest(text="A long answer"), params=params))


def test_the_deployments_pod_through_start_up_worker_kill_and_termination(
        rendered, test_models, pb, health_pb):
    pod = Pod(rendered["cpu"], test_models, health_pb)
    assert pod.env["DRAIN_GRACE_SECONDS"] and pod.container["command"] == ["fms-server"]
    pod.start()
    try:
        # Start-up: liveness and readiness wait for the startup probe to pass.
        startup = pod.probe("startupProbe", start_ok=False)
        limit = (pod.container["startupProbe"]["failureThreshold"] *
                 pod.container["startupProbe"]["periodSeconds"])
        while not startup.ok:
            assert pod.process.poll() is None, pod.process.stdout.read()
            assert time.time() - pod.started < limit, startup.attempts
            time.sleep(0.1)
        startup.stop()
        readiness = pod.probe("readinessProbe", start_ok=False)
        liveness = pod.probe("livenessProbe", start_ok=True)
        deadline = time.time() + 30
        while not readiness.ok:
            assert time.time() < deadline, readiness.attempts
            time.sleep(0.1)
        stub = pb[1].GenerationServiceStub(pod.grpc_channel())
        assert stub.Generate(pb[0].BatchedGenerationRequest(
            requests=[pb[0].GenerationRequest(text="Ready")]), timeout=30).responses[0].text

        # A worker dies: the readiness probe, as written, sees NOT_SERVING while the
        # group restarts; liveness never reaches its threshold (no container
        # restart); readiness passes again.
        kill_time = time.time()
        subprocess.run(["kill", "-9", worker_pids(pod.process)[0]], check=True)
        seen = []
        while time.time() - kill_time < 30:
            success, detail = run_probe(pod.container["readinessProbe"], pod.host)
            seen.append(detail)
            if not success:
                break
            time.sleep(0.02)
        assert "NOT_SERVING" in seen, seen
        deadline = time.time() + 60
        while not (readiness.attempts and readiness.attempts[-1][0] > kill_time and
                   readiness.attempts[-1][1]):
            assert time.time() < deadline, readiness.attempts
            time.sleep(0.1)
        while not [a for a in liveness.attempts if a[0] > kill_time]:  # One liveness round.
            assert time.time() < deadline, liveness.attempts
            time.sleep(0.1)
        assert liveness.ok and liveness.max_failures_in_a_row < pod.container[
            "livenessProbe"]["failureThreshold"], liveness.attempts
        assert readiness.ok

        # Termination as kubelet does it: preStop (the pod still serves: endpoints
        # are being removed, late requests still arrive), then SIGTERM with those
        # requests in flight; they finish, and the exit comes within
        # terminationGracePeriodSeconds.
        terminating = time.time()
        pre_stop = pod.container["lifecycle"]["preStop"]["exec"]["command"]
        subprocess.run(pre_stop, check=True, timeout=pod.spec["terminationGracePeriodSeconds"])
        stub = pb[1].GenerationServiceStub(pod.grpc_channel())
        streams = [long_stream(pb, stub, 400) for _ in range(4)]
        for call in streams:
            next(call)
        results = {}

        def drain(i, call):
            try:
                results[i] = list(call)
            except grpc.RpcError as error:
                results[i] = error
        readers = [threading.Thread(target=drain, args=(i, c)) for i, c in enumerate(streams)]
        for reader in readers:
            reader.start()
        in_flight = sum(r.is_alive() for r in readers)
        pod.process.terminate()
        time.sleep(0.05)
        draining, drain_detail = run_probe(pod.container["readinessProbe"], pod.host)
        assert not draining, drain_detail  # No new traffic while draining.
        grace = pod.spec["terminationGracePeriodSeconds"]
        pod.process.wait(timeout=grace - (time.time() - terminating))
        took = time.time() - terminating
        for reader in readers:
            reader.join(timeout=5)
        readiness.stop()
        liveness.stop()
        assert pod.process.returncode == 0
        assert took < grace
        assert in_flight > 0, "every stream ended before SIGTERM: make them longer"
        assert len(results) == 4
        for i, result in results.items():
            assert not isinstance(result, grpc.RpcError), (i, result)
            assert result[-1].stop_reason == pb[0].StopReason.MAX_TOKENS
            assert result[-1].generated_token_count == 400
        print(f"startup probe passed after {len(startup.attempts)} attempts; readiness saw "
              f"{seen[-1]} after the worker kill; {in_flight}/4 streams in flight at SIGTERM; "
              f"exit 0 after {took:.1f} s of {grace} s")
    finally:
        if pod.process.poll() is None:
            pod.process.kill()
            pod.process.wait()
