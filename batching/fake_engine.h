// FakeEngine: a deterministic engine for scheduler and batcher tests (no
// model). It checks every plan as a worker does (PlanChecker: unknown
// sequence, wrong context length, block table too short, a block owned by two
// live sequences, ...) and crashes the test on one a worker would refuse.
//
// The token after a chunk is (last token of the chunk + 1) % vocab_size, or
// a scripted token for a given (sequence, step index).

#ifndef FMS_BATCHING_FAKE_ENGINE_H_
#define FMS_BATCHING_FAKE_ENGINE_H_

#include <map>
#include <vector>

#include "batching/engine.h"
#include "batching/plan_checker.h"

namespace fms {

class FakeEngine : public Engine {
 public:
  explicit FakeEngine(EngineInfo info)
      : info_(std::move(info)),
        checker_({.vocab_size = info_.vocab_size,
                  .num_blocks = info_.num_blocks,
                  .block_size = info_.block_size}) {}

  EngineInfo Info() const override { return info_; }
  absl::StatusOr<StepResult> Step(const StepPlan& plan) override;

  // The token sequence `id` produces as its `index`-th generated token.
  void Script(SequenceId id, size_t index, int32_t token) { script_[{id, index}] = token; }
  // Step number `step` (StepPlan::step) fails with `status`.
  void FailStep(uint64_t step, absl::Status status) { failures_[step] = status; }

  const std::vector<StepPlan>& plans() const { return plans_; }
  // Sequences the engine still holds state for.
  size_t live_sequences() const { return sequences_.size(); }
  // Forgets every sequence, as restarted workers would.
  void Forget() {
    sequences_.clear();
    checker_ = PlanChecker({.vocab_size = info_.vocab_size,
                            .num_blocks = info_.num_blocks,
                            .block_size = info_.block_size});
  }

 private:
  struct State {
    size_t generated = 0;
  };

  EngineInfo info_;
  PlanChecker checker_;
  std::map<SequenceId, State> sequences_;
  std::map<std::pair<SequenceId, size_t>, int32_t> script_;
  std::map<uint64_t, absl::Status> failures_;
  std::vector<StepPlan> plans_;
};

}  // namespace fms

#endif  // FMS_BATCHING_FAKE_ENGINE_H_
