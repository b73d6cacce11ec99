#include "batching/step_cost.h"

#include <algorithm>
#include <cmath>

namespace fms {
namespace {

constexpr double kWeight = 0.2;  // Of the newest observation.

void Blend(std::optional<double>& estimate, double value) {
  estimate = estimate.has_value() ? (1 - kWeight) * *estimate + kWeight * value : value;
}

}  // namespace

void StepCost::Observe(int64_t decodes, int64_t prompt_tokens, double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds)) return;
  if (prompt_tokens == 0) {
    if (decodes > 0) Blend(decode_seconds_, seconds);
    return;
  }
  if (prompt_tokens < kMinPromptTokens) return;  // Too few to tell from noise.
  double extra = seconds;
  if (decodes > 0) {
    if (!decode_seconds_.has_value()) return;
    extra = std::max(seconds - *decode_seconds_, 0.0);
  }
  Blend(token_seconds_, extra / static_cast<double>(prompt_tokens));
}

std::optional<int64_t> StepCost::PromptBudget(int64_t decodes) const {
  if (ratio_ <= 1 || decodes == 0 || !decode_seconds_.has_value() ||
      !token_seconds_.has_value() || *token_seconds_ <= 0) {
    return std::nullopt;
  }
  const double tokens = (ratio_ - 1) * *decode_seconds_ / *token_seconds_;
  return std::max(kMinPromptTokens, static_cast<int64_t>(std::min(tokens + 1e-6, 1e9)));
}

}  // namespace fms
