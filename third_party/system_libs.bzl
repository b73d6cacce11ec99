"""Debian system libraries as cc_library targets, flags read from pkg-config.

Headers live in the compiler's built-in include directories, so the targets only
carry defines and link options. pkg-config keeps the long transitive abseil link
lines of Debian's gRPC correct (Debian gRPC headers inline abseil and need
-labsl_synchronization among others; libtorch-build-notes.md section 5.2).
"""

# name -> (pkg-config modules, extra link options, description)
_LIBS = {
    "absl": (
        ["absl_status", "absl_statusor", "absl_strings", "absl_str_format",
         "absl_synchronization", "absl_time", "absl_flags", "absl_flags_parse",
         "absl_random_random", "absl_hash", "absl_raw_hash_set"],
        [],
        "Abseil (Debian 20220623, inline namespace debian3)",
    ),
    "protobuf": (["protobuf"], [], "protobuf 3.21"),
    # -labsl_synchronization is already in grpc++'s closure; it is repeated here
    # because a hand-written line without it fails to link (absl Mutex).
    "grpc": (["grpc++", "protobuf"], ["-labsl_synchronization"], "gRPC C++ 1.51"),
    "grpc_reflection": (["grpc++"], ["-lgrpc++_reflection"], "gRPC server reflection"),
    "spdlog": (["spdlog"], [], "spdlog compiled library with external fmt"),
    "sentencepiece": (["sentencepiece"], [], "only the dlopen shim may link this"),
    "gtest": (["gtest", "gmock", "gtest_main"], [], "GoogleTest and GoogleMock with main"),
    "prometheus": (["prometheus-cpp-core", "prometheus-cpp-pull"], [], "prometheus-cpp"),
    "json": (["nlohmann_json"], [], "nlohmann JSON 3.11, header-only"),
}

def _pkg_config(rctx, modules):
    res = rctx.execute(["pkg-config", "--cflags", "--libs"] + modules)
    if res.return_code != 0:
        fail("pkg-config %s failed (run tools/bootstrap): %s" % (" ".join(modules), res.stderr))
    defines, linkopts = [], []
    for flag in res.stdout.replace("\n", " ").split(" "):
        if not flag:
            continue
        if flag.startswith("-D"):
            defines.append(flag[2:])
        elif flag.startswith("-I"):
            fail("pkg-config %s wants a non-default include dir %s" % (modules, flag))
        elif flag not in linkopts or not flag.startswith("-l"):
            linkopts.append(flag)
    return defines, linkopts

def _system_libs_impl(rctx):
    build = ['package(default_visibility = ["//visibility:public"])\n']
    for name, (modules, extra, doc) in _LIBS.items():
        defines, linkopts = _pkg_config(rctx, modules)
        build.append(
            "# %s\ncc_library(\n    name = %r,\n    defines = %r,\n    linkopts = %r,\n)\n" %
            (doc, name, defines, linkopts + extra),
        )
    build.append('cc_library(name = "dl", linkopts = ["-ldl"])\n')
    # civetweb (Debian 1.15, prometheus-cpp's web server) ships no .pc file.
    build.append('cc_library(name = "civetweb", linkopts = ["-lcivetweb"])\n')
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD.bazel", "\n".join(build))

system_libs = repository_rule(
    implementation = _system_libs_impl,
    local = True,
    environ = ["PKG_CONFIG_PATH"],
)
