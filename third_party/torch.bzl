"""LibTorch from the PyPI torch wheel, as @libtorch//:torch_cpu (and :torch_cuda).

The wheel directory comes from $TORCH_DIR, else from the project's venv (made by
tools/bootstrap) through importlib.util.find_spec, which locates the package
without executing it: `import torch` fails on a CUDA wheel without its CUDA
libraries (libtorch-build-notes.md section 0.4).

The libraries are linked with -L/-rpath to their real directory, not cc_import:
Bazel would symlink each .so into its own _solib directory, and the wheel's
RUNPATH $ORIGIN would then no longer find libc10.so and libgomp.so.1 (section 5.4).

The wheel's include/ also carries google/protobuf (3.13) and fmt (12.x). As
-isystem directories they would come before /usr/include and shadow Debian's
protobuf 3.21 and fmt 9, which gRPC and spdlog are built against. Only the other
entries are linked into this repository's include/.
"""

# Entries of the wheel's include/ that must not shadow Debian's headers.
_SHADOWING = ["google", "fmt"]

_FIND_SPEC = ("import importlib.util as u; " +
              "print(u.find_spec('torch').submodule_search_locations[0])")

def _venv_python(rctx):
    env = rctx.os.environ
    cache = env.get("FMS_CACHE_DIR")
    if not cache:
        cache = env.get("XDG_CACHE_HOME", env.get("HOME", "") + "/.cache") + "/fms-serve"
    return cache + "/venv/bin/python"

def _torch_root(rctx):
    root = rctx.os.environ.get("TORCH_DIR")
    if root:
        return root
    python = _venv_python(rctx)
    res = rctx.execute([python, "-c", _FIND_SPEC])
    if res.return_code != 0:
        fail("torch not found: set TORCH_DIR or run tools/bootstrap (tried %s): %s" %
             (python, res.stderr))
    return res.stdout.strip()

_BUILD = """
package(default_visibility = ["//visibility:public"])

# CPU part of LibTorch only: libtorch.so would pull libtorch_cuda.so and the CUDA stack.
cc_library(
    name = "torch_cpu",
    hdrs = glob(["include/**"]),
    includes = ["include", "include/torch/csrc/api/include"],
    linkopts = ["-L{lib}", "-Wl,-rpath,{lib}", "-ltorch_cpu", "-lc10"],
)

# CUDA build (--config=cuda): --no-as-needed keeps libtorch_cuda.so, whose load
# registers the CUDA hooks; without it CUDA is silently "not available".
cc_library(
    name = "torch_cuda",
    defines = ["FMS_CUDA=1"],
    linkopts = [
        "-Wl,--no-as-needed", "-ltorch_cuda", "-lc10_cuda", "-Wl,--as-needed",
        "-Wl,--allow-shlib-undefined",
    ],
    deps = [":torch_cpu"],
)
"""

def _libtorch_impl(rctx):
    root = _torch_root(rctx)
    if not rctx.path(root + "/lib/libtorch_cpu.so").exists:
        fail("%s has no lib/libtorch_cpu.so: not a torch wheel directory" % root)
    for entry in rctx.path(root + "/include").readdir():
        if entry.basename not in _SHADOWING:
            rctx.symlink(entry, "include/" + entry.basename)
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD.bazel", _BUILD.format(lib = root + "/lib"))

libtorch_repository = repository_rule(
    implementation = _libtorch_impl,
    local = True,
    environ = ["TORCH_DIR", "FMS_CACHE_DIR", "XDG_CACHE_HOME", "HOME"],
)
