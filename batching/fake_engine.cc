#include "batching/fake_engine.h"

#include "batching/check.h"

namespace fms {

void FakeEngine::CheckChunk(const ScheduledChunk& chunk) {
  auto it = sequences_.find(chunk.id);
  FMS_CHECK(it != sequences_.end(), "chunk of an unknown sequence");
  State& state = it->second;
  state.blocks.insert(state.blocks.end(), chunk.new_blocks.begin(), chunk.new_blocks.end());
  FMS_CHECK(chunk.context_len == state.cached, "context_len is not the cached length");
  const int64_t end = chunk.context_len + static_cast<int64_t>(chunk.token_ids.size());
  FMS_CHECK(!chunk.token_ids.empty(), "empty chunk");
  FMS_CHECK(end <= static_cast<int64_t>(state.blocks.size()) * info_.block_size,
            "block table too short");
  state.cached = end;
}

absl::StatusOr<StepResult> FakeEngine::Step(const StepPlan& plan) {
  plans_.push_back(plan);
  for (const NewSequence& s : plan.new_sequences) {
    FMS_CHECK(sequences_.emplace(s.id, State{}).second, "sequence sent twice");
  }
  for (SequenceId id : plan.finished) {
    FMS_CHECK(sequences_.erase(id) == 1, "finished an unknown sequence");
  }
  for (SequenceId id : plan.preempted) {
    State& state = sequences_.at(id);
    state.blocks.clear();
    state.cached = 0;
  }
  for (const ScheduledChunk& chunk : plan.chunks) CheckChunk(chunk);
  std::set<int32_t> owned;  // No block may belong to two live sequences.
  for (const auto& [id, state] : sequences_) {
    for (int32_t b : state.blocks) {
      FMS_CHECK(b >= 0 && b < info_.num_blocks, "block id out of range");
      FMS_CHECK(owned.insert(b).second, "block shared by two sequences");
    }
  }
  absl::Status failure = failures_.count(plan.step) ? failures_[plan.step] : absl::OkStatus();
  StepResult result{.step = plan.step};
  for (const ScheduledChunk& chunk : plan.chunks) {
    if (!chunk.sample) continue;
    State& state = sequences_.at(chunk.id);
    auto scripted = script_.find({chunk.id, state.generated});
    const int32_t token = scripted != script_.end()
                              ? scripted->second
                              : static_cast<int32_t>((chunk.token_ids.back() + 1) %
                                                     info_.vocab_size);
    ++state.generated;
    result.outputs.push_back({.id = chunk.id, .token = token});
  }
  if (!failure.ok()) return failure;
  return result;
}

}  // namespace fms
