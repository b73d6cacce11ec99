// FakeEngine: a deterministic engine for scheduler and batcher tests (no
// model). It checks every plan as a worker does (PlanChecker: unknown
// sequence, wrong context length, block table too short, a block owned by two
// live sequences, ...) and crashes the test on one a worker would refuse.
// It also keeps a fake KV cache: every position written holds a fingerprint
// of the adapter and all tokens up to it, and a chunk whose cached_blocks
// (prefix caching) hold anything but this sequence's own prefix, or whose
// tokens are not the sequence's next ones, crashes the test.
//
// The token after a chunk is (last token of the chunk + 1) % vocab_size, or
// a scripted token for a given (sequence, step index).

#ifndef FMS_BATCHING_FAKE_ENGINE_H_
#define FMS_BATCHING_FAKE_ENGINE_H_

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
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
                  .block_size = info_.block_size}),
        slots_(static_cast<size_t>(info_.num_blocks * info_.block_size), 0) {}

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
    std::fill(slots_.begin(), slots_.end(), 0);
  }

 private:
  struct State {
    size_t generated = 0;
    std::vector<int32_t> tokens;   // Prompt, then generated.
    uint64_t root = 0;             // Of the adapter.
    std::vector<uint64_t> prints;  // Per position: adapter and tokens up to it.
    std::vector<int32_t> blocks;   // Block table.
  };
  uint64_t Print(State& s, int64_t position) const;
  void RunChunk(const ScheduledChunk& chunk, State& state);

  EngineInfo info_;
  PlanChecker checker_;
  std::map<SequenceId, State> sequences_;
  std::map<std::pair<SequenceId, size_t>, int32_t> script_;
  std::map<uint64_t, absl::Status> failures_;
  std::vector<StepPlan> plans_;
  std::vector<uint64_t> slots_;  // The fake KV cache: a fingerprint per position.
};

}  // namespace fms

#endif  // FMS_BATCHING_FAKE_ENGINE_H_
