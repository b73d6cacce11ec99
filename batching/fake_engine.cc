#include "batching/fake_engine.h"

#include <functional>
#include <string>

#include "batching/check.h"

namespace fms {

uint64_t FakeEngine::Print(State& s, int64_t position) const {
  while (static_cast<int64_t>(s.prints.size()) <= position) {
    const uint64_t parent = s.prints.empty() ? s.root : s.prints.back();
    const uint64_t token = static_cast<uint64_t>(s.tokens.at(s.prints.size()));
    s.prints.push_back(std::hash<uint64_t>{}(parent * 1000003 + token) ^ (parent << 1));
  }
  return s.prints[position];
}

void FakeEngine::RunChunk(const ScheduledChunk& chunk, State& state) {
  const int64_t size = info_.block_size;
  for (int32_t block : chunk.cached_blocks) {
    const int64_t first = static_cast<int64_t>(state.blocks.size()) * size;
    for (int64_t i = 0; i < size; ++i) {
      FMS_CHECK(slots_[block * size + i] == Print(state, first + i),
                "a cached block holds another prefix");
    }
    state.blocks.push_back(block);
  }
  state.blocks.insert(state.blocks.end(), chunk.new_blocks.begin(), chunk.new_blocks.end());
  for (size_t i = 0; i < chunk.token_ids.size(); ++i) {
    const int64_t position = chunk.context_len + static_cast<int64_t>(i);
    FMS_CHECK(state.tokens.at(position) == chunk.token_ids[i], "a chunk of other tokens");
    slots_[state.blocks.at(position / size) * size + position % size] = Print(state, position);
  }
}

absl::StatusOr<StepResult> FakeEngine::Step(const StepPlan& plan) {
  plans_.push_back(plan);
  for (SequenceId id : plan.finished) {
    FMS_CHECK(sequences_.erase(id) == 1, "finished an unknown sequence");
  }
  // What a real worker refuses (LlamaEngine runs the same checker) crashes
  // the test here: the scheduler must never send it.
  const absl::Status accepted = checker_.Accept(plan);
  FMS_CHECK(accepted.ok(), std::string(accepted.message()).c_str());
  for (SequenceId id : plan.preempted) {
    if (auto it = sequences_.find(id); it != sequences_.end()) it->second.blocks.clear();
  }
  for (const NewSequence& s : plan.new_sequences) {
    // The adapter is part of every fingerprint: a position of another
    // adapter never matches.
    State state{.tokens = s.prompt, .root = std::hash<std::string>{}(s.adapter)};
    sequences_.emplace(s.id, std::move(state));
  }
  for (const ScheduledChunk& chunk : plan.chunks) RunChunk(chunk, sequences_.at(chunk.id));
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
    state.tokens.push_back(token);
    result.outputs.push_back({.id = chunk.id, .token = token});
  }
  if (!failure.ok()) return failure;
  return result;
}

}  // namespace fms
