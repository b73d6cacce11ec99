// WorkerGroup: the NUM_SHARD fms-worker processes of one model, started with
// posix_spawn (fork+exec) by the front end, each on its own Unix domain
// socket, with its share of the cores (OMP_NUM_THREADS set before exec). The
// workers die with the front end (PR_SET_PDEATHSIG in fms-worker) and with
// the group (SIGTERM, then SIGKILL).

#ifndef FMS_SHARDING_WORKER_GROUP_H_
#define FMS_SHARDING_WORKER_GROUP_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fms {

struct WorkerGroupOptions {
  std::string worker_binary;   // Path of fms-worker.
  std::string model;           // Model directory.
  int num_shard = 1;
  std::string socket_dir;      // Rank logs, and sockets unless socket_prefix.
  // SHARD_UDS_PATH: rank r listens on <socket_prefix>-<r>; empty means
  // <socket_dir>/rank-<r>.sock.
  std::string socket_prefix;
  std::string dtype = "float32";
  // What each worker sizes its KV pool for (sharding/worker_app.h).
  int64_t max_sequence_length = 0;  // 0: the model's max_position_embeddings.
  int64_t kv_budget_bytes = 0;  // KV_CACHE_MEMORY; 0: the worker's default.
  int64_t block_size = 16;
  // MASTER_ADDR / MASTER_PORT: the ranks' rendezvous (NUM_SHARD > 1).
  std::string master_addr = "localhost";
  int master_port = 29500;
};

class WorkerGroup {
 public:
  // Spawns every rank; does not wait for them (see WaitReady).
  static absl::StatusOr<std::unique_ptr<WorkerGroup>> Start(const WorkerGroupOptions& options);
  ~WorkerGroup();  // SIGTERM, up to 5 s, then SIGKILL; reaps every process.

  const WorkerGroupOptions& options() const { return options_; }
  const std::vector<std::string>& sockets() const { return sockets_; }
  const std::vector<pid_t>& pids() const { return pids_; }

  // Waits until every rank answers Info; fails when one exits first (naming
  // the rank and its exit status, with the worker's own error line) or on timeout.
  absl::Status WaitReady(absl::Duration timeout);
  // The ranks that exited, as "rank R exited with <status>: <its last error
  // line>", joined by "; "; nullopt when all run.
  std::optional<std::string> Exited();

 private:
  WorkerGroup() = default;

  WorkerGroupOptions options_;
  std::vector<pid_t> pids_;
  std::vector<std::string> sockets_;
  std::vector<std::string> logs_;  // stderr of each rank.
  std::vector<bool> reaped_;
};

// fms-worker next to the running executable, or in its Bazel runfiles.
absl::StatusOr<std::string> FindWorkerBinary();

}  // namespace fms

#endif  // FMS_SHARDING_WORKER_GROUP_H_
