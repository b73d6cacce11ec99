// StepCost: what a step costs, learned from the steps the batcher ran, so
// that prompt chunks beside running decodes stay small enough for the
// streams not to stall (stall-free batching, as in Sarathi-Serve): a step
// carrying prompt tokens should cost at most `ratio` decode-only steps.
//
// Two exponentially weighted estimates: the time of a decode-only step (the
// batch of the moment), and the time per prompt token beyond it (from mixed
// steps, or from prompt-only steps, which also charge the step's fixed cost
// to the tokens and so err on the small side). Scheduler thread only.

#ifndef FMS_BATCHING_STEP_COST_H_
#define FMS_BATCHING_STEP_COST_H_

#include <cstdint>
#include <optional>

namespace fms {

class StepCost {
 public:
  // `ratio` <= 1 turns the limit off (PromptBudget is always nullopt).
  explicit StepCost(double ratio) : ratio_(ratio) {}

  // A step ran `decodes` decode tokens and `prompt_tokens` prompt (or
  // recompute) tokens in `seconds`.
  void Observe(int64_t decodes, int64_t prompt_tokens, double seconds);

  // Prompt tokens a step may carry beside `decodes` decodes; nullopt: no
  // limit (no decode waits, no estimate yet, or the limit is off). At least
  // kMinPromptTokens, so prompts always progress.
  std::optional<int64_t> PromptBudget(int64_t decodes) const;

  static constexpr int64_t kMinPromptTokens = 16;

 private:
  double ratio_;
  std::optional<double> decode_seconds_;  // A decode-only step.
  std::optional<double> token_seconds_;   // One prompt token beyond the decodes.
};

}  // namespace fms

#endif  // FMS_BATCHING_STEP_COST_H_
