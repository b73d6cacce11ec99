// RemoteEngine: the Engine seam over the worker processes. Every plan goes to
// every rank (SPMD) concurrently; rank 0's StepResult is the answer. A rank
// that fails or has exited fails the step with a message naming it.

#ifndef FMS_SHARDING_REMOTE_ENGINE_H_
#define FMS_SHARDING_REMOTE_ENGINE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
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
  // On every rank at once; a rank's refusal is the answer (rank 0's when
  // several refuse), and the ranks that did load it forget it again.
  absl::StatusOr<AdapterInfo> LoadAdapter(const std::string& id,
                                          const std::string& dir) override;
  void UnloadAdapter(const std::string& id) override;

  // Points the engine at a new worker group (after a restart). Thread-safe;
  // the model facts must not change.
  absl::Status Reconnect(const std::vector<std::string>& sockets);

 private:
  using Stubs = std::vector<std::shared_ptr<worker::WorkerService::Stub>>;
  RemoteEngine() = default;
  Stubs CurrentStubs() ABSL_LOCKS_EXCLUDED(mu_);
  // Stubs for `sockets` and rank 0's facts.
  static absl::StatusOr<std::pair<Stubs, EngineInfo>> Open(
      const std::vector<std::string>& sockets);

  absl::Mutex mu_;
  Stubs stubs_ ABSL_GUARDED_BY(mu_);
  EngineInfo info_;
};

}  // namespace fms

#endif  // FMS_SHARDING_REMOTE_ENGINE_H_
