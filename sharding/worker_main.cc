// fms-worker: one rank of the model, serving the WorkerService on a Unix
// domain socket. Started by the front end (worker_group.h); dies with it.
//
//   fms-worker --model DIR --socket PATH [--rank 0] [--world-size 1]
//              [--threads N] [--dtype float32] [--max-sequence-length N] [--kv-budget-bytes N] [--block-size 16]

#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "sharding/worker_app.h"

int main(int argc, char** argv) {
  // Die with the front end, even if it is killed with SIGKILL.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent already gone (reparented before prctl)? Compare with the pid the
  // front end passed, not with 1: in a container the front end is PID 1.
  if (const char* server = std::getenv("FMS_SERVER_PID");
      server != nullptr && getppid() != static_cast<pid_t>(std::atol(server))) {
    return 1;
  }
  auto options = fms::ParseWorkerArgs(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "fms-worker: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  return fms::RunWorker(*options);
}
