"""Shared fixtures for the Python tests: paths, test models, the probe."""

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The binaries under test: bazel-bin, or another build's (tools/test --sanitize
# points FMS_BIN_DIR at the ASan + UBSan tree).
BAZEL_BIN = pathlib.Path(os.environ.get("FMS_BIN_DIR") or ROOT / "bazel-bin")


def cache_dir():
    base = os.environ.get("FMS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fms-serve"
    )
    return pathlib.Path(base)


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct converted for fms-server (bfloat16 safetensors),
    made by tools/fetch_model (tools/test runs it and sets FMS_SMOLLM2_DIR)."""
    if os.environ.get("FMS_SMOLLM2_DIR"):
        return pathlib.Path(os.environ["FMS_SMOLLM2_DIR"])
    out = subprocess.run([str(ROOT / "tools" / "fetch_model")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return pathlib.Path(out.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def test_models():
    """Directory of the tiny test checkpoints, generated once per script version
    (tools/test makes them first and sets FMS_TEST_MODELS)."""
    if os.environ.get("FMS_TEST_MODELS"):
        return pathlib.Path(os.environ["FMS_TEST_MODELS"])
    script = ROOT / "tools" / "make_test_models.py"
    # As tools/test: the scripts, and the requirement lines of the packages that
    # write the models (tools/test-model-packages.txt, a grep -E pattern).
    pattern = re.compile((ROOT / "tools" / "test-model-packages.txt").read_text().strip())
    lines = [line for line in (ROOT / "tools" / "requirements.txt").read_text().splitlines(True)
             if pattern.search(line)]
    key = hashlib.sha256(
        script.read_bytes() + (ROOT / "tools" / "hf_tokenizer_fixtures.py").read_bytes()
        + "".join(lines).encode()
    ).hexdigest()[:16]
    out = cache_dir() / "test-models" / key
    if not (out / ".complete").exists():
        subprocess.run([sys.executable, str(script), "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        (out / ".complete").write_text("ok\n")
    return out


def run_probe(request, tmp_path):
    """Runs //sharding:llama_probe on `request`; returns (stdout JSON, logits file)."""
    probe = BAZEL_BIN / "sharding" / "llama_probe"
    if not probe.exists():
        pytest.fail(f"{probe} missing: run `bazel build //...` (tools/test does)")
    out = tmp_path / "logits.bin"
    request = {**request, "out": str(out)}
    result = subprocess.run([str(probe)], input=json.dumps(request), text=True,
                            capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"llama_probe failed: {result.stderr}")
    return json.loads(result.stdout), out


# fms-server end-to-end fixtures (helpers in server_harness.py).
import server_harness  # noqa: E402

pb = pytest.fixture(scope="session")(server_harness.pb)
health_pb = pytest.fixture(scope="session")(server_harness.health_pb)
stub = pytest.fixture(scope="session")(server_harness.stub)
long_stub = pytest.fixture(scope="module")(server_harness.long_stub)
_stop_started_servers = pytest.fixture(autouse=True)(server_harness._stop_started_servers)
