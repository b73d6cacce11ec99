"""deploy/Dockerfile's runtime stage, run without Docker: tools/check_image builds
its file tree into a debootstrap'd Debian 12 root and serves the test model from
it (read-only root, uid 2000 gid 0, PID 1 in its own namespace, TGIS's launcher
command). Needs root for chroot and mount namespaces; CI runs as root."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.skipif(os.geteuid() != 0, reason="tools/check_image needs root (chroot, mounts)")
def test_runtime_image_serves_the_test_model(test_models):
    done = subprocess.run([str(ROOT / "tools/check_image")], capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "FMS_TEST_MODELS": str(test_models),
                                             "FMS_VENV": sys.prefix})
    report = done.stderr
    assert done.returncode == 0, report[-4000:]
    for line in ("every library found inside the root, no absolute RUNPATH",
                 "Check(fmaas.GenerationService): SERVING", "GET /health: 200",
                 "stop_reason MAX_TOKENS", "fms-health --http inside the root: exit 0",
                 "SIGTERM: exit 0"):
        assert line in report, (line, report[-4000:])
