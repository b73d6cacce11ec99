"""tools/check_image: the runtime image's file tree, checked by running it.

1. A Debian 12 root from `debootstrap --variant=minbase` with the packages of
   deploy/runtime-packages.txt (the runtime stage's apt-get line), cached by the
   hash of that list and copied afresh for each run.
2. tools/deploy/stage_runtime writes /opt/fms-serve into it, as in the
   Dockerfile's `COPY --from=build /stage/ /`; the test model goes to /mnt/models.
3. Every ELF file under /opt/fms-serve: `ldd` inside the root finds every
   library, and no RUNPATH names a directory outside the image.
4. In new mount and PID namespaces the root is bind-mounted read-only, with
   tmpfs /tmp and /dev/shm (the manifests' emptyDirs), /proc and /dev; then
   `chroot --userspec=2000:0` runs TGIS's ServingRuntime command
   `text-generation-launcher --model-name=/mnt/models/ --port=P --grpc-port=G`
   with the image's environment only.
5. From outside: grpc.health.v1 says SERVING, GET /health is 200, one Generate
   returns text; `fms-health` inside the root exits 0; SIGTERM exits 0.
"""

import argparse
import hashlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from tools.deploy import cache

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
PACKAGES = ROOT / "deploy" / "runtime-packages.txt"
MIRROR = "http://deb.debian.org/debian"
# The Dockerfile's ENV, and what a container runtime sets.
IMAGE_ENV = {"PATH": "/opt/fms-serve/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                     "/sbin:/bin", "HOME": "/tmp", "HOSTNAME": "fms-serve"}


def log(message: str) -> None:
    print(f"check_image: {message}", file=sys.stderr, flush=True)


def packages() -> list:
    return [line.strip() for line in PACKAGES.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def base_root() -> pathlib.Path:
    """The cached debootstrap root for the current package list."""
    key = hashlib.sha256(PACKAGES.read_bytes()).hexdigest()[:16]
    base = cache.cache_dir() / "image-root" / key
    if (base / ".complete").exists():
        return base
    shutil.rmtree(base, ignore_errors=True)
    base.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap --variant=minbase bookworm with {len(packages())} runtime packages "
        f"into {base} (once per package list)")
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(packages())}",
                    "bookworm", str(base), MIRROR], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["chroot", str(base), "apt-get", "clean"], check=True)
    (base / ".complete").touch()
    return base


def elf_files(image: pathlib.Path) -> list:
    found = []
    for path in sorted((image / "opt/fms-serve").rglob("*")):
        if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF":
            found.append(path)
    return found


def check_links(image: pathlib.Path) -> None:
    """Every ELF resolves all its libraries inside the root; RUNPATHs are relative."""
    for path in elf_files(image):
        inside = "/" + str(path.relative_to(image))
        out = subprocess.run(["chroot", str(image), "ldd", inside], capture_output=True,
                             text=True).stdout
        assert "not found" not in out, f"{inside}: {out}"
        dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True,
                                 text=True).stdout
        for line in dynamic.splitlines():
            if "RUNPATH" in line or "RPATH" in line:
                entries = line.split("[", 1)[1].rstrip("]").split(":")
                absolute = [e for e in entries if e and not e.startswith("$ORIGIN")]
                assert not absolute, f"{inside}: build-time RUNPATH {absolute}"
    log(f"{len(elf_files(image))} ELF files: every library found inside the root, "
        "no absolute RUNPATH")


def start(image: pathlib.Path, scratch: pathlib.Path, grpc_port: int,
          http_port: int) -> subprocess.Popen:
    """fms-server as the container runs it; returns the unshare process.
    `scratch` is mounted at /tmp, as an emptyDir is: a host folder."""
    mounts = f"""set -e
root={image}
mount --make-rprivate /
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind {scratch} "$root/tmp"
mount -t tmpfs -o mode=1777,size=1g tmpfs "$root/dev/shm"
exec chroot --userspec=2000:0 "$root" /usr/bin/env -i {' '.join(f'{k}={v}' for k, v in IMAGE_ENV.items())} \\
  text-generation-launcher --model-name=/mnt/models/ --port={http_port} --grpc-port={grpc_port}
"""
    return subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--kill-child",
                             "sh", "-c", mounts], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_logs(scratch: pathlib.Path) -> str:
    return "".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in scratch.rglob("rank-*.log"))


def serve_and_query(image: pathlib.Path) -> None:
    from tools.serving import stubs
    pb, rpc, health_pb, health_rpc = stubs.load()
    import grpc
    grpc_port, http_port = free_port(), free_port()
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="fms-image-tmp-"))
    scratch.chmod(0o1777)
    server = start(image, scratch, grpc_port, http_port)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        health = health_rpc.HealthStub(channel)
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, server.stdout.read() + worker_logs(scratch)
            try:
                status = health.Check(health_pb.HealthCheckRequest(
                    service="fmaas.GenerationService"), timeout=1).status
                if status == health_pb.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.time() < deadline, "not SERVING after 120 s"
            time.sleep(0.2)
        log("grpc.health.v1 Check(fmaas.GenerationService): SERVING")
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5) as reply:
            assert reply.status == 200
        log("GET /health: 200")
        response = rpc.GenerationServiceStub(channel).Generate(pb.BatchedGenerationRequest(
            requests=[pb.GenerationRequest(text="The image works")],
            params=pb.Parameters(stopping=pb.StoppingCriteria(max_new_tokens=8))), timeout=60)
        generated = response.responses[0]
        assert generated.generated_token_count > 0 and generated.text, response
        log(f"Generate: {generated.generated_token_count} tokens, "
            f"stop_reason {pb.StopReason.Name(generated.stop_reason)}, text {generated.text!r}")
        probe = subprocess.run(
            ["chroot", "--userspec=2000:0", str(image), "/usr/bin/env", "-i",
             *[f"{k}={v}" for k, v in IMAGE_ENV.items()], f"PORT={http_port}",
             "fms-health", "--http"], capture_output=True, text=True, timeout=10)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        log(f"fms-health --http inside the root: exit 0, {probe.stdout.strip()!r}")
    finally:
        # unshare blocks SIGTERM while it waits; its child became fms-server
        # (sh, chroot and env exec), PID 1 of the new namespace.
        child = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                               text=True).stdout.split()
        for pid in child:
            os.kill(int(pid), 15)
        out, _ = server.communicate(timeout=60)
    shutil.rmtree(scratch, ignore_errors=True)
    assert server.returncode == 0, out
    log("SIGTERM: exit 0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the image root")
    args = parser.parse_args()
    if os.geteuid() != 0:
        log("needs root (debootstrap, chroot, mount namespaces)")
        return 2
    models = os.environ.get("FMS_TEST_MODELS")
    if not models:
        log("FMS_TEST_MODELS is not set (tools/test sets it)")
        return 2
    base = base_root()
    image = pathlib.Path(tempfile.mkdtemp(prefix="fms-image-"))
    image.chmod(0o755)  # It becomes "/": mkdtemp's 0700 would lock uid 2000 out.
    try:
        subprocess.run(["cp", "-a", f"{base}/.", str(image)], check=True)
        (image / ".complete").unlink()
        subprocess.run([str(ROOT / "tools/deploy/stage_runtime"), str(image)], check=True)
        shutil.copytree(pathlib.Path(models) / "gqa2", image / "mnt/models", dirs_exist_ok=True)
        # As a volume must be for uid 2000 / gid 0 (safetensors writes 0600 files).
        subprocess.run(["chmod", "-R", "a+rX", str(image / "mnt/models")], check=True)
        check_links(image)
        serve_and_query(image)
    finally:
        if args.keep:
            log(f"kept {image}")
        else:
            shutil.rmtree(image, ignore_errors=True)
    log("the runtime image serves")
    return 0
