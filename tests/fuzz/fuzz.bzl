"""libFuzzer targets that are also corpus-replay tests (issue 13).

fuzz_target(name, srcs, deps, ...) makes:
  * `name`: the libFuzzer binary. Only `--config=fuzz` (clang, ASan + UBSan)
    builds it; it is tagged manual so that `bazel build //...` with GCC skips it.
  * `name_replay`: a cc_test that runs every file of the committed corpus
    `corpus/<name>/` through the same LLVMFuzzerTestOneInput, in any build (GCC,
    --config=asan): the corpus, crash inputs included, is a regression test.
"""

def fuzz_target(name, srcs, deps, data = [], env = {}, size = "small"):
    native.cc_library(
        name = name + "_body",
        srcs = srcs,
        deps = deps,
        testonly = True,
        alwayslink = True,
    )
    native.cc_binary(
        name = name,
        deps = [":" + name + "_body"],
        linkopts = ["-fsanitize=fuzzer"],
        data = data,
        testonly = True,
        tags = ["manual"],
    )
    corpus = native.glob(["corpus/%s/*" % name])
    native.cc_test(
        name = name + "_replay",
        size = size,
        deps = [":" + name + "_body", ":replay_main"],
        data = data + corpus,
        args = ["tests/fuzz/corpus/" + name],
        env = env,
    )
