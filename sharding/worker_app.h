// The fms-worker process: options, model loading, the WorkerService on a
// Unix domain socket, and SIGTERM handling.

#ifndef FMS_SHARDING_WORKER_APP_H_
#define FMS_SHARDING_WORKER_APP_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace fms {

struct WorkerOptions {
  std::string model;        // Hugging Face model directory.
  std::string socket;       // Unix domain socket path to serve on.
  int rank = 0;
  int world_size = 1;
  int threads = 0;          // Intra-op threads; 0 means all cores.
  std::string dtype = "float32";
  // The KV pool, sized here (model/kv_cache.h KvPoolBlocks): kv_budget_bytes
  // of it (0: 4 GiB), and room for one sequence of max_sequence_length tokens
  // at least (0: the model's max_position_embeddings).
  int64_t max_sequence_length = 0;
  int64_t kv_budget_bytes = 0;
  int64_t block_size = 16;
  // Tensor-parallel rendezvous (world_size > 1): rank 0 serves the TCPStore.
  std::string master_addr = "localhost";
  int master_port = 29500;
  // "auto": cuda:<rank> when CUDA devices exist, else the CPU; or "cpu", "cuda".
  std::string device = "auto";
};

absl::StatusOr<WorkerOptions> ParseWorkerArgs(int argc, char** argv);

// Returns the exit code: 0 after SIGTERM, 1 when the model cannot be loaded
// or served (the reason is printed as one line naming the file or tensor).
int RunWorker(const WorkerOptions& options);

}  // namespace fms

#endif  // FMS_SHARDING_WORKER_APP_H_
