"""The project's Rust crate server/hf_tokenizer (a C ABI over Hugging Face's
`tokenizers`) as @hf_tokenizer//:hf_tokenizer, a static library.

The rule runs `cargo build --locked --release` itself, so `bazel build` needs
nothing prepared. Cargo's target directory lives outside the checkout, in the
fms-serve cache, one per hash of the crate's files (Cargo.lock among them):
the crate is compiled once per lockfile and source, and reused across
checkouts and CI runs. Cargo's registry cache (~/.cargo) is outside too.
"""

# The crate's files: a change to any of them re-runs the rule.
_CRATE_FILES = [
    "//server/hf_tokenizer:Cargo.toml",
    "//server/hf_tokenizer:Cargo.lock",
    "//server/hf_tokenizer:src/lib.rs",
]

_BUILD = """
package(default_visibility = ["//visibility:public"])

cc_import(
    name = "lib",
    static_library = "libfms_hf_tokenizer.a",
)

# Rust's standard library needs these from the C side.
cc_library(
    name = "hf_tokenizer",
    linkopts = ["-lpthread", "-ldl", "-lm"],
    deps = [":lib"],
)
"""

def _cache_dir(rctx):
    env = rctx.os.environ
    cache = env.get("FMS_CACHE_DIR")
    if not cache:
        cache = env.get("XDG_CACHE_HOME", env.get("HOME", "") + "/.cache") + "/fms-serve"
    return cache

def _cargo(rctx):
    cargo = rctx.which("cargo")
    if cargo:
        return str(cargo)
    home = rctx.os.environ.get("CARGO_HOME", rctx.os.environ.get("HOME", "") + "/.cargo")
    if rctx.path(home + "/bin/cargo").exists:
        return home + "/bin/cargo"
    fail("cargo not found (install Rust with rustup, or put cargo on PATH)")

def _hf_tokenizer_impl(rctx):
    files = [rctx.path(Label(f)) for f in _CRATE_FILES]
    # The same key as tools/test's `cargo test`, which so reuses this build.
    res = rctx.execute(["sh", "-c", 'cat "$@" | sha256sum | cut -c1-16', "sh"] +
                       [str(f) for f in files])
    if res.return_code != 0:
        fail("hashing the crate failed: " + res.stderr)
    key = res.stdout.strip()
    target = "%s/hf-tokenizer/%s" % (_cache_dir(rctx), key)
    manifest = str(files[0])
    rctx.report_progress("cargo build --locked --release (server/hf_tokenizer)")
    res = rctx.execute(
        [_cargo(rctx), "build", "--locked", "--release", "--manifest-path", manifest],
        environment = {"CARGO_TARGET_DIR": target},
        timeout = 1800,
        quiet = True,
    )
    if res.return_code != 0:
        fail("cargo build of server/hf_tokenizer failed:\n" + res.stderr)
    rctx.symlink(target + "/release/libfms_hf_tokenizer.a", "libfms_hf_tokenizer.a")
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD.bazel", _BUILD)

hf_tokenizer_repository = repository_rule(
    implementation = _hf_tokenizer_impl,
    local = True,
    environ = ["FMS_CACHE_DIR", "XDG_CACHE_HOME", "HOME", "CARGO_HOME", "PATH"],
)
