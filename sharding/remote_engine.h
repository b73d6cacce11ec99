// RemoteEngine: the Engine seam over the worker processes. Every plan goes to
// every rank (SPMD) concurrently; rank 0's StepResult is the answer. A rank
// that fails or has exited fails the step with a message naming it.

#ifndef FMS_SHARDING_REMOTE_ENGINE_H_
#define FMS_SHARDING_REMOTE_ENGINE_H_

#include <memory>
#include <string>
#include <vector>

#include "batching/engine.h"
#include "proto/worker.grpc.pb.h"

namespace fms {

class RemoteEngine : public Engine {
 public:
  // Connects to the ranks' sockets (rank r at sockets[r]) and asks rank 0
  // for the model's facts.
  static absl::StatusOr<std::unique_ptr<RemoteEngine>> Connect(
      const std::vector<std::string>& sockets);

  EngineInfo Info() const override { return info_; }
  absl::StatusOr<StepResult> Step(const StepPlan& plan) override;

 private:
  RemoteEngine() = default;

  std::vector<std::unique_ptr<worker::WorkerService::Stub>> stubs_;
  EngineInfo info_;
};

}  // namespace fms

#endif  // FMS_SHARDING_REMOTE_ENGINE_H_
