"""C++ code for a .proto with the system protoc and grpc_cpp_plugin."""

def cc_grpc_proto(name, proto, visibility = None):
    """Generates <base>.pb.{h,cc} and <base>.grpc.pb.{h,cc}; a cc_library `name`."""
    base = proto[:-len(".proto")]
    outs = [base + ext for ext in [".pb.cc", ".pb.h", ".grpc.pb.cc", ".grpc.pb.h"]]
    native.genrule(
        name = name + "_gen",
        srcs = [proto],
        outs = outs,
        cmd = "protoc -I$$(dirname $(location %s)) " % proto +
              "--cpp_out=$(RULEDIR) --grpc_out=$(RULEDIR) " +
              "--plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) " +
              "$(location %s)" % proto,
    )
    native.cc_library(
        name = name,
        srcs = [base + ".pb.cc", base + ".grpc.pb.cc"],
        hdrs = [base + ".pb.h", base + ".grpc.pb.h"],
        # The generated .pb.cc include their headers without the proto/ prefix.
        includes = ["."],
        visibility = visibility,
        deps = ["@system//:grpc"],
    )
