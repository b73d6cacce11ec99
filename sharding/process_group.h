// The tensor-parallel process group of one fms-worker rank: rendezvous
// through c10d's TCPStore on MASTER_ADDR:MASTER_PORT (rank 0 serves it), then
// c10d's ProcessGroupGloo for CPU tensors or ProcessGroupNCCL for CUDA
// tensors, behind the model's Collectives interface (model/tensor_parallel.h).

#ifndef FMS_SHARDING_PROCESS_GROUP_H_
#define FMS_SHARDING_PROCESS_GROUP_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/tensor_parallel.h"

namespace fms {

struct ProcessGroupOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "localhost";  // MASTER_ADDR: where rank 0 listens.
  int master_port = 29500;                // MASTER_PORT
  at::Device device = at::kCPU;  // The rank's device: CUDA uses NCCL, CPU Gloo.
  absl::Duration timeout = absl::Minutes(5);  // Rendezvous and each collective.
};

// Joins the group; blocks until every rank has joined or the timeout passes.
// Errors name the address and the reason. A collective that fails later (a
// lost peer) ends the process with exit status kCollectiveFailedExit after
// one line on stderr: the front end then restarts the whole group.
absl::StatusOr<std::unique_ptr<Collectives>> JoinProcessGroup(
    const ProcessGroupOptions& options);

inline constexpr int kCollectiveFailedExit = 3;

}  // namespace fms

#endif  // FMS_SHARDING_PROCESS_GROUP_H_
