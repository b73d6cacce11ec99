// StepCost: what a step costs, learned from the steps the batcher ran, so
// that prompt chunks beside running decodes stay small enough for the
// streams not to stall (stall-free batching, as in Sarathi-Serve): a step
// carrying prompt tokens should cost at most `ratio` decode-only steps of the
// same decode batch.
//
// The model is linear, t = fixed + per_decode * decodes + per_token * prompt
// tokens, fitted by least squares over every step the batcher reports,
// recent steps weighted more (each older step's weight decays by kDecay).
// A decode-only step is thus priced at the batch of the moment: the first
// version kept one average of decode-only steps whatever their batch, and
// under load, where most steps are mixed, that average came from small early
// batches; every mixed step's excess was then charged to its prompt tokens
// and the budget starved admission (SmolLM2 bf16, 64 closed-loop streams:
// 188 tok/s against 428 without the cut; docs/benchmarks.md). Scheduler
// thread only.

#ifndef FMS_BATCHING_STEP_COST_H_
#define FMS_BATCHING_STEP_COST_H_

#include <array>
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
  static constexpr double kDecay = 0.95;  // Weight of a step, one step older.

 private:
  static constexpr int kTerms = 3;  // fixed, per decode, per prompt token
  using Vector = std::array<double, kTerms>;

  // The features of a step, scaled to similar magnitudes.
  static Vector Features(int64_t decodes, int64_t prompt_tokens);
  // The fitted coefficients, or nullopt before the data determine them.
  std::optional<Vector> Fit() const;

  double ratio_;
  std::array<Vector, kTerms> gram_{};  // sum of w * x x^T
  Vector moment_{};                    // sum of w * x t
  double prompt_weight_ = 0;           // weight of steps with prompt tokens
  double decode_weight_ = 0;           // weight of steps with decodes
};

}  // namespace fms

#endif  // FMS_BATCHING_STEP_COST_H_
