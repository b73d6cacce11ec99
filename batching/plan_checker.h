// PlanChecker: a worker's guard against a StepPlan that contradicts what the
// worker holds (a corrupt or forged message, a scheduler bug). A refused plan
// is an error for its step's sequences, never a crash of the worker.
//
// Forgetting is idempotent: `finished` and `preempted` entries are applied
// first and always, and ids the worker does not hold are ignored (after a
// refused plan the scheduler finishes sequences the worker never took).
// Everything that adds state is checked as a whole before any of it is
// applied: new sequences are new, with prompts inside the vocabulary and
// finite sampling parameters; each chunk names a held or new sequence once,
// continues exactly where its KV cache ends, carries token ids inside the
// vocabulary, and appends free blocks in range that cover its positions.
// Prefix caching: a chunk's cached_blocks must be full blocks this worker
// computed (by any sequence) and has not handed out fresh since, appended to
// a block table that ends on a block boundary; several sequences may hold
// one. A fresh block must be held by none.
//
// Not thread-safe: the worker's step thread owns it.

#ifndef FMS_BATCHING_PLAN_CHECKER_H_
#define FMS_BATCHING_PLAN_CHECKER_H_

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "batching/step.h"

namespace fms {

struct PlanLimits {
  int64_t vocab_size = 0;  // Token ids are in [0, vocab_size).
  int64_t num_blocks = 0;  // Block ids are in [0, num_blocks).
  int64_t block_size = 0;  // Positions per block.
};

class PlanChecker {
 public:
  explicit PlanChecker(PlanLimits limits);

  // Forgets plan.finished and plan.preempted, then checks the rest and
  // records it; INVALID_ARGUMENT naming the first contradiction, with nothing
  // of the rest recorded.
  absl::Status Accept(const StepPlan& plan);

  // Sequences held, and blocks held by at least one (for tests and the fuzzer).
  size_t num_sequences() const { return held_.size(); }
  int64_t num_owned_blocks() const;

 private:
  struct Held {
    int64_t cached = 0;           // Positions in the KV cache.
    std::vector<int32_t> blocks;  // Block table.
  };
  void Free(Held& held);
  absl::Status CheckNew(const StepPlan& plan) const;
  absl::Status CheckChunks(const StepPlan& plan) const;
  absl::Status CheckBlock(int32_t block, SequenceId id) const;
  absl::Status CheckTokens(const std::vector<int32_t>& ids, SequenceId id) const;

  PlanLimits limits_;
  std::unordered_map<SequenceId, Held> held_;
  std::vector<int32_t> holders_;  // Per block: sequences whose tables hold it.
  std::vector<bool> full_;        // Per block: all its positions computed since it was fresh.
};

}  // namespace fms

#endif  // FMS_BATCHING_PLAN_CHECKER_H_
