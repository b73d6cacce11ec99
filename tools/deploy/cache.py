"""Where tools/bootstrap keeps the pinned files tools/deploy reads."""

import os
import pathlib

KSERVE_WHEEL = "kserve-0.21.0-py3-none-any.whl"  # Pinned in tools/kserve-schema.txt.


def cache_dir() -> pathlib.Path:
    if "FMS_CACHE_DIR" in os.environ:
        return pathlib.Path(os.environ["FMS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME", str(pathlib.Path.home() / ".cache"))
    return pathlib.Path(base) / "fms-serve"


def kserve_wheel() -> pathlib.Path:
    wheel = cache_dir() / "wheels" / KSERVE_WHEEL
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel} is missing: run tools/bootstrap")
    return wheel


def go_tool(name: str) -> pathlib.Path:
    """A Go tool tools/bootstrap built (ghz, grpcurl, kustomize)."""
    tool = cache_dir() / "go" / "bin" / name
    if not tool.is_file():
        raise FileNotFoundError(f"{tool} is missing: run tools/bootstrap")
    return tool
