// fms-health [--grpc | --http] [--host=H] [--grpc-port=N] [--port=N]
//            [--service=S] [--timeout-ms=N]
// Exits 0 when fms-server answers SERVING (or HTTP 200) in time, 1 when it
// does not, 2 on bad arguments; prints one line saying which.

#include <cstdio>
#include <string>
#include <vector>

#include "server/config.h"
#include "server/health_probe.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  const absl::StatusOr<fms::ProbeOptions> options = fms::ParseProbeArgs(args, fms::ProcessEnv);
  if (!options.ok()) {
    std::fprintf(stderr, "fms-health: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  const absl::Status status = fms::Probe(*options);
  if (!status.ok()) {
    std::printf("fms-health: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::printf("fms-health: serving\n");
  return 0;
}
