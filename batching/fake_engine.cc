#include "batching/fake_engine.h"

#include "batching/check.h"

#include <string>

namespace fms {

absl::StatusOr<StepResult> FakeEngine::Step(const StepPlan& plan) {
  plans_.push_back(plan);
  for (SequenceId id : plan.finished) {
    FMS_CHECK(sequences_.erase(id) == 1, "finished an unknown sequence");
  }
  // What a real worker refuses (LlamaEngine runs the same checker) crashes
  // the test here: the scheduler must never send it.
  const absl::Status accepted = checker_.Accept(plan);
  FMS_CHECK(accepted.ok(), std::string(accepted.message()).c_str());
  for (const NewSequence& s : plan.new_sequences) sequences_.emplace(s.id, State{});
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
