// The fms-server process: loads the model, starts the batcher and the gRPC
// server, and serves until SIGTERM or SIGINT, then drains.
//
// Until the worker processes exist (sharding/), the model runs in this process
// through LlamaEngine, as architecture.md allows.

#ifndef FMS_SERVER_APP_H_
#define FMS_SERVER_APP_H_

#include "server/config.h"

namespace fms {

// Returns the process exit code. A fatal start-up error is printed as one
// line and written to /dev/termination-log when that is writable.
int RunServer(const ServerConfig& config);

}  // namespace fms

#endif  // FMS_SERVER_APP_H_
