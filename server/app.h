// The fms-server process, its composition root: TLS credentials, the Backend
// (server/backend.h: tokenizer, fms-worker processes, batcher), the gRPC and
// HTTP servers, health, and the SIGTERM drain. Serves until SIGTERM or SIGINT.

#ifndef FMS_SERVER_APP_H_
#define FMS_SERVER_APP_H_

#include "server/config.h"

namespace fms {

// Returns the process exit code. A fatal start-up error is printed as one
// line and written to /dev/termination-log when that is writable.
int RunServer(const ServerConfig& config);

}  // namespace fms

#endif  // FMS_SERVER_APP_H_
