// RemoteEngine: the Engine seam over the worker processes. Every plan goes to
// every rank (SPMD) concurrently, over one long-lived Steps stream per rank
// (a unary call per step cost ~1 ms of a 10 ms decode step: docs/
// benchmarks.md, "One step stream per rank"); rank 0's StepResult is the
// answer. A rank that fails or has exited fails the step with a message
// naming it, and the next step opens new streams.

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

  ~RemoteEngine() override;

  EngineInfo Info() const override { return info_; }
  // One caller at a time (the batcher's thread): the streams are its own.
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
  // One rank's Steps call.
  struct StepStream {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReaderWriter<worker::StepPlan, worker::StepResult>> stream;
    bool finished = false;  // Finish() called: it may be called once.
  };
  RemoteEngine() = default;
  Stubs CurrentStubs() ABSL_LOCKS_EXCLUDED(mu_);
  // Opens a stream per rank unless the open ones are for the current stubs.
  void EnsureStreams() ABSL_LOCKS_EXCLUDED(mu_);
  // Cancels and closes the streams (the next step opens new ones).
  void CloseStreams();
  // Rank `rank`'s error from its failed stream, which it finishes.
  absl::Status RankError(size_t rank);
  // Stubs for `sockets` and rank 0's facts.
  static absl::StatusOr<std::pair<Stubs, EngineInfo>> Open(
      const std::vector<std::string>& sockets);

  absl::Mutex mu_;
  Stubs stubs_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // Bumped by Reconnect.
  EngineInfo info_;
  // The Step caller's: streams_[r] to rank r of stubs generation streams_for_.
  std::vector<StepStream> streams_;
  uint64_t streams_for_ = 0;
};

}  // namespace fms

#endif  // FMS_SHARDING_REMOTE_ENGINE_H_
