"""Python gRPC stubs for the serving tools, compiled once per process from the
repository's protos (proto/generation.proto, and the standard health protocol that
proto/health.proto spells out) into a temporary folder."""

import functools
import pathlib
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


@functools.cache
def load():
    """Returns (generation_pb2, generation_pb2_grpc, health_pb2, health_pb2_grpc)."""
    out = tempfile.mkdtemp(prefix="fms-stubs-")
    for folder, name in ((ROOT / "proto", "generation.proto"),
                         (ROOT / "proto", "health.proto")):
        if protoc.main(["protoc", f"-I{folder}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(folder / name)]) != 0:
            raise RuntimeError(f"protoc failed on {folder / name}")
    sys.path.insert(0, out)
    import generation_pb2
    import generation_pb2_grpc
    import health_pb2
    import health_pb2_grpc
    return generation_pb2, generation_pb2_grpc, health_pb2, health_pb2_grpc
