#include "batching/step_cost.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace fms {
namespace {

constexpr double kDecodeScale = 1.0 / 16;   // decodes / 16
constexpr double kTokenScale = 1.0 / 128;   // prompt tokens / 128
constexpr double kRidge = 1e-6;             // keeps a 3x3 system solvable
constexpr double kMinWeight = 0.5;         // about one recent step of a kind

// Solves a x = b for a 3x3 system by Gaussian elimination with partial
// pivoting; nullopt when singular.
std::optional<std::array<double, 3>> Solve(std::array<std::array<double, 3>, 3> a,
                                           std::array<double, 3> b) {
  for (int col = 0; col < 3; ++col) {
    int pivot = col;
    for (int r = col + 1; r < 3; ++r) {
      if (std::abs(a[r][col]) > std::abs(a[pivot][col])) pivot = r;
    }
    if (std::abs(a[pivot][col]) < 1e-12) return std::nullopt;
    std::swap(a[col], a[pivot]);
    std::swap(b[col], b[pivot]);
    for (int r = col + 1; r < 3; ++r) {
      const double f = a[r][col] / a[col][col];
      for (int c = col; c < 3; ++c) a[r][c] -= f * a[col][c];
      b[r] -= f * b[col];
    }
  }
  std::array<double, 3> x{};
  for (int r = 2; r >= 0; --r) {
    double sum = b[r];
    for (int c = r + 1; c < 3; ++c) sum -= a[r][c] * x[c];
    x[r] = sum / a[r][r];
  }
  return x;
}

}  // namespace

StepCost::Vector StepCost::Features(int64_t decodes, int64_t prompt_tokens) {
  return {1.0, static_cast<double>(decodes) * kDecodeScale,
          static_cast<double>(prompt_tokens) * kTokenScale};
}

void StepCost::Observe(int64_t decodes, int64_t prompt_tokens, double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds) || decodes < 0 || prompt_tokens < 0) return;
  if (prompt_tokens > 0 && prompt_tokens < kMinPromptTokens) return;  // Noise.
  if (decodes == 0 && prompt_tokens == 0) return;
  const Vector x = Features(decodes, prompt_tokens);
  for (int i = 0; i < kTerms; ++i) {
    for (int j = 0; j < kTerms; ++j) gram_[i][j] = kDecay * gram_[i][j] + x[i] * x[j];
    moment_[i] = kDecay * moment_[i] + x[i] * seconds;
  }
  prompt_weight_ = kDecay * prompt_weight_ + (prompt_tokens > 0 ? 1 : 0);
  decode_weight_ = kDecay * decode_weight_ + (decodes > 0 ? 1 : 0);
}

std::optional<StepCost::Vector> StepCost::Fit() const {
  if (prompt_weight_ < kMinWeight || decode_weight_ < kMinWeight) return std::nullopt;
  std::array<Vector, kTerms> a = gram_;
  for (int i = 0; i < kTerms; ++i) a[i][i] += kRidge * gram_[0][0];
  return Solve(a, moment_);
}

std::optional<int64_t> StepCost::PromptBudget(int64_t decodes) const {
  if (ratio_ <= 1 || decodes == 0) return std::nullopt;
  const std::optional<Vector> fit = Fit();
  if (!fit.has_value()) return std::nullopt;
  const Vector x = Features(decodes, 0);
  const double decode_seconds = (*fit)[0] * x[0] + (*fit)[1] * x[1];
  const double token_seconds = (*fit)[2] * kTokenScale;
  if (!(decode_seconds > 0) || !(token_seconds > 0)) return std::nullopt;
  const double tokens = (ratio_ - 1) * decode_seconds / token_seconds;
  return std::max(kMinPromptTokens, static_cast<int64_t>(std::min(tokens + 1e-6, 1e9)));
}

}  // namespace fms
