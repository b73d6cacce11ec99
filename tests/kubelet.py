"""Kubernetes probes run the way kubelet runs them, for tests/deploy_test.py:
httpGet (success is a status in [200, 400)), grpc (grpc.health.v1 Check says
SERVING) and exec (exit code 0), each bounded by the probe's timeoutSeconds,
repeated every periodSeconds after initialDelaySeconds, with failureThreshold
consecutive failures changing the verdict. Ports and commands go through
`ContainerHost`, which stands in for the pod: the manifest's container ports
are mapped to host ports, and the image's commands to the built binaries."""

import dataclasses
import subprocess
import threading
import time
import urllib.error
import urllib.request

import grpc


@dataclasses.dataclass
class ContainerHost:
    ports: dict        # containerPort (int) and port name (str) -> host port.
    commands: dict     # Image command name -> host executable.
    env: dict          # The container's environment for exec probes.
    health_pb: tuple   # (health_pb2, health_pb2_grpc).

    def port(self, value):
        return self.ports[value]

    def command(self, argv):
        return [self.commands.get(argv[0], argv[0]), *argv[1:]]


def run_probe(probe: dict, host: ContainerHost) -> tuple:
    """One probe attempt; returns (success, detail)."""
    timeout = probe.get("timeoutSeconds", 1)
    if "httpGet" in probe:
        get = probe["httpGet"]
        url = f"http://127.0.0.1:{host.port(get['port'])}{get.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                return 200 <= reply.status < 400, f"HTTP {reply.status}"
        except urllib.error.HTTPError as error:
            return False, f"HTTP {error.code}"
        except OSError as error:
            return False, str(error)
    if "grpc" in probe:
        health_pb2, health_grpc = host.health_pb
        with grpc.insecure_channel(f"127.0.0.1:{host.port(probe['grpc']['port'])}") as channel:
            try:
                status = health_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
                    timeout=timeout).status
            except grpc.RpcError as error:
                return False, error.code().name
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        return name == "SERVING", name
    if "exec" in probe:
        try:
            done = subprocess.run(host.command(probe["exec"]["command"]), env=host.env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, "timed out"
        return done.returncode == 0, (done.stdout + done.stderr).strip()
    raise ValueError(f"probe without a handler: {probe}")


class ProbeWorker:
    """One probe of one container on kubelet's schedule, in a thread. Records
    every attempt and the verdict: `ok` flips after failureThreshold
    consecutive failures or successThreshold consecutive successes."""

    def __init__(self, name: str, probe: dict, host: ContainerHost, start_ok: bool):
        self.name, self.probe, self.host = name, probe, host
        self.ok = start_ok
        self.attempts = []          # (time, success, detail)
        self.transitions = []       # (time, ok)
        self.max_failures_in_a_row = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        if self._stop.wait(self.probe.get("initialDelaySeconds", 0)):
            return
        failures = successes = 0
        while True:
            success, detail = run_probe(self.probe, self.host)
            now = time.time()
            self.attempts.append((now, success, detail))
            failures, successes = (0, successes + 1) if success else (failures + 1, 0)
            self.max_failures_in_a_row = max(self.max_failures_in_a_row, failures)
            if self.ok and failures >= self.probe.get("failureThreshold", 3):
                self.ok = False
                self.transitions.append((now, False))
            elif not self.ok and successes >= self.probe.get("successThreshold", 1):
                self.ok = True
                self.transitions.append((now, True))
            if self._stop.wait(self.probe.get("periodSeconds", 10)):
                return
