// fms-health: the probe a Kubernetes `exec` probe (or Knative, which redirects
// HTTP probes to its one serving port) runs inside the container. It asks the
// server in the same pod whether it is serving, through grpc.health.v1 on the
// gRPC port or GET /health on the HTTP port, and answers within its timeout.
// Both say SERVING / 200 only once the model is loaded and while the worker
// group is up (server/app.cc).

#ifndef FMS_SERVER_HEALTH_PROBE_H_
#define FMS_SERVER_HEALTH_PROBE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/config.h"

namespace fms {

struct ProbeOptions {
  enum class Mode {
    kGrpc,  // grpc.health.v1.Health/Check on the gRPC port (plaintext).
    kHttp,  // GET /health on the HTTP port.
  };
  Mode mode = Mode::kGrpc;
  // Where the server listens; a probe runs in the server's pod.
  std::string host = "127.0.0.1";
  // GRPC_PORT and PORT, read as fms-server reads them, so that one
  // environment serves both.
  uint32_t grpc_port = 8033;
  uint32_t http_port = 3000;
  // The gRPC health service name; "" asks about the whole server.
  std::string service = "fmaas.GenerationService";
  // The whole probe, connection included.
  int timeout_ms = 1000;
};

// Parses `args` (without the program name): --grpc (default), --http,
// --host=H, --grpc-port=N, --port=N, --service=S, --timeout-ms=N. With
// TLS_CERT_PATH set the gRPC port speaks TLS, which this probe (like kubelet's
// gRPC probe) does not: --grpc then fails, naming --http.
absl::StatusOr<ProbeOptions> ParseProbeArgs(const std::vector<std::string>& args,
                                            const EnvLookup& env);

// OK when the server says SERVING (gRPC) or 200 (HTTP) within the timeout;
// otherwise UNAVAILABLE or DEADLINE_EXCEEDED with one line saying what was seen.
absl::Status Probe(const ProbeOptions& options);

}  // namespace fms

#endif  // FMS_SERVER_HEALTH_PROBE_H_
