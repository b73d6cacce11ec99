"""Starts, times, measures and stops the servers of the serving benchmark: fms-serve
(bazel-bin/server/fms-server) and the peer (vLLM CPU + vllm-tgis-adapter, installed by
tools/peer/install), each in a process group of its own on loopback ports."""

import multiprocessing
import os
import pathlib
import signal
import socket
import subprocess
import time

import grpc

from . import stubs

ROOT = stubs.ROOT


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid):
    """Resident memory of pid and all its descendants (MiB), from /proc."""
    children = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    total_kb, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in pathlib.Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


def fms_command(model, dtype, grpc_port, http_port, max_batch, max_seq):
    # FMS_BIN_DIR: another build's binaries (tools/test --sanitize), as in tests/.
    bin_dir = pathlib.Path(os.environ.get("FMS_BIN_DIR") or ROOT / "bazel-bin")
    return [str(bin_dir / "server" / "fms-server"), f"--model-name={model}",
            f"--dtype-str={dtype}", f"--grpc-port={grpc_port}", f"--port={http_port}",
            f"--max-batch-size={max_batch}", f"--max-sequence-length={max_seq}"], {}


def peer_command(venv, model, dtype, grpc_port, http_port, max_batch, max_seq, cores):
    env = {"VLLM_CPU_KVCACHE_SPACE": "4", "VLLM_HOST_IP": "127.0.0.1",
           # vLLM's "auto" binding takes one CPU per core and leaves none reserved; say
           # every core explicitly so that it gets the same cores as fms-serve.
           "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}"}
    return [str(pathlib.Path(venv) / "bin" / "python"), "-m", "vllm_tgis_adapter",
            "--model", str(model), "--dtype", dtype, "--max-model-len", str(max_seq),
            "--max-num-seqs", str(max_batch), "--host", "127.0.0.1",
            "--port", str(http_port), "--grpc-port", str(grpc_port)], env


def sample_peak_rss(pid, peak, stop):
    """Keeps in `peak` the largest tree_rss_mb(pid) seen every 0.5 s until `stop` is set.
    Runs in a process of its own: walking /proc in a thread of the load generator held the
    GIL and delayed the client's token timestamps (ITL stalls of 30-65 ms at c=1)."""
    while not stop.is_set():
        peak.value = max(peak.value, tree_rss_mb(pid))
        stop.wait(0.5)


class Server:
    """One server process: start() returns once gRPC health says SERVING."""

    def __init__(self, label, command, env, grpc_port, log_path):
        self.label, self.command, self.env = label, command, env
        self.target = f"127.0.0.1:{grpc_port}"
        self.log_path = log_path
        self.proc = None
        self.startup_s = None
        self._peak = self._stop_sampling = self._sampler = None

    def start(self, timeout_s=900):
        pb = stubs.load()
        log = open(self.log_path, "w")
        start = time.perf_counter()
        self.proc = subprocess.Popen(self.command, env={**os.environ, **self.env},
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        with grpc.insecure_channel(self.target) as channel:
            health = pb[3].HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; "
                                       f"log: {self.log_path}")
                if time.perf_counter() - start > timeout_s:
                    raise RuntimeError(f"{self.label} not SERVING in {timeout_s} s")
                try:
                    status = health.Check(pb[2].HealthCheckRequest(service=""), timeout=1)
                    if status.status == pb[2].HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.startup_s = time.perf_counter() - start
        context = multiprocessing.get_context("spawn")
        self._peak, self._stop_sampling = context.Value("d", 0.0), context.Event()
        self._sampler = context.Process(target=sample_peak_rss, daemon=True,
                                        args=(self.proc.pid, self._peak, self._stop_sampling))
        self._sampler.start()
        return self

    @property
    def peak_rss_mb(self):
        return self._peak.value if self._peak is not None else 0.0

    def rss_mb(self):
        return tree_rss_mb(self.proc.pid)

    def stop(self):
        if self._sampler is not None:
            self._stop_sampling.set()
            self._sampler.join(timeout=10)
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Worker processes of either server die with their group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
