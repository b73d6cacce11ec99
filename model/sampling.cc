#include "model/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace fms {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// min_new_tokens masks every EOS id; the length penalty boosts them.
void ApplyEosControls(at::Tensor& scores, std::span<const SamplingInput> inputs,
                      std::span<const int32_t> eos_ids) {
  for (size_t b = 0; b < inputs.size(); ++b) {
    const SamplingParams& p = *inputs[b].params;
    const int64_t generated = static_cast<int64_t>(inputs[b].generated.size());
    at::Tensor row = scores[b];
    for (int32_t eos : eos_ids) {
      if (eos < 0 || eos >= row.size(0)) continue;
      if (generated < p.min_new_tokens) {
        row[eos].fill_(kNegInf);
        continue;
      }
      const int64_t past = generated - static_cast<int64_t>(p.length_penalty_start);
      if (p.length_penalty_decay > 1.0f && past > 0) {
        const at::Tensor e = row[eos];
        row[eos].copy_(e + e.abs() * (std::pow(double(p.length_penalty_decay),
                                               double(past)) - 1.0));
      }
    }
  }
}

// HF RepetitionPenaltyLogitsProcessor over prompt and generated tokens.
void ApplyRepetitionPenalty(at::Tensor& scores,
                            std::span<const SamplingInput> inputs) {
  for (size_t b = 0; b < inputs.size(); ++b) {
    const float theta = inputs[b].params->repetition_penalty;
    if (theta == 1.0f || theta <= 0.0f) continue;
    std::vector<int64_t> seen(inputs[b].prompt.begin(), inputs[b].prompt.end());
    seen.insert(seen.end(), inputs[b].generated.begin(), inputs[b].generated.end());
    if (seen.empty()) continue;
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    const at::Tensor index = at::tensor(seen, at::kLong).to(scores.device());
    at::Tensor row = scores[b];
    const at::Tensor s = row.index_select(0, index);
    row.index_copy_(0, index, at::where(s < 0, s * theta, s / theta));
  }
}

// HF TopKLogitsWarper (ties with the k-th score survive).
void TopK(at::Tensor& row, int32_t k) {
  if (k <= 0 || k >= row.size(0)) return;
  const at::Tensor kth = std::get<0>(row.topk(k)).select(0, k - 1);
  row.masked_fill_(row < kth, kNegInf);
}

// HF TopPLogitsWarper with min_tokens_to_keep = 1.
void TopP(at::Tensor& row, float top_p) {
  if (!(top_p < 1.0f)) return;
  const auto [sorted, order] = row.sort(/*dim=*/0, /*descending=*/false);
  at::Tensor remove = sorted.softmax(0).cumsum(0) <= (1.0 - top_p);
  remove[-1].fill_(false);
  row.masked_fill_(remove.scatter(0, order, remove), kNegInf);
}

// HF TypicalLogitsWarper with min_tokens_to_keep = 1.
void TypicalP(at::Tensor& row, float mass) {
  if (!(mass > 0.0f && mass < 1.0f)) return;
  const at::Tensor normalized = row.log_softmax(0);
  const at::Tensor entropy = -(normalized * normalized.exp()).nansum();
  const at::Tensor shifted = (-normalized - entropy).abs();
  const auto [sorted, order] = shifted.sort(0, false);
  const at::Tensor cumulative = row.gather(0, order).softmax(0).cumsum(0);
  const int64_t last =
      std::min<int64_t>((cumulative < mass).sum().item<int64_t>(), row.size(0) - 1);
  at::Tensor remove = sorted > sorted[last];
  remove[0].fill_(false);
  row.masked_fill_(remove.scatter(0, order, remove), kNegInf);
}

int32_t Draw(const at::Tensor& row, uint64_t seed, uint64_t step) {
  const at::Tensor cdf = row.softmax(0).to(at::kDouble).cumsum(0);
  const double target = SampleUniform(seed, step) * cdf[-1].item<double>();
  const int64_t token =
      at::searchsorted(cdf, at::scalar_tensor(target, at::kDouble), false, true)
          .item<int64_t>();
  return static_cast<int32_t>(std::min<int64_t>(token, row.size(0) - 1));
}

void FillDetails(const at::Tensor& processed, const SamplingParams& p,
                 TokenChoice& choice) {
  TokenDetails& details = choice.details;
  if (p.logprobs) {
    details.logprob = processed.log_softmax(0)[choice.token].item<float>();
  }
  if (p.ranks) {
    details.rank = 1 + static_cast<uint32_t>(
                           (processed > processed[choice.token]).sum().item<int64_t>());
  }
  if (p.top_n > 0) details.top = TopTokens(processed, p.top_n, p.logprobs);
}

// A writable fp32 copy of logits [B, vocab]. On the CPU a plain memcpy: the
// whole step's sampling is a few passes over B * vocab floats, and each
// LibTorch op there would open an OpenMP region, whose wake-up and barrier
// cost more than the pass on a loaded machine (~0.7 ms a step, measured).
at::Tensor ScoresCopy(const at::Tensor& logits) {
  if (!logits.device().is_cpu() || logits.scalar_type() != at::kFloat) {
    return logits.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  }
  const at::Tensor source = logits.contiguous();
  at::Tensor scores = at::empty(source.sizes(), source.options());
  std::memcpy(scores.mutable_data_ptr<float>(), source.const_data_ptr<float>(),
              source.numel() * sizeof(float));
  return scores;
}

// Index of the first maximum of each row of scores [B, vocab] (as argmax),
// one serial pass a row on the CPU.
std::vector<int64_t> RowArgmax(const at::Tensor& scores) {
  if (!scores.device().is_cpu()) {
    const at::Tensor best = scores.argmax(-1).cpu();
    return std::vector<int64_t>(best.const_data_ptr<int64_t>(),
                                best.const_data_ptr<int64_t>() + best.numel());
  }
  const at::Tensor dense = scores.contiguous();  // A no-op for ScoresCopy's result.
  const int64_t rows = dense.size(0), vocab = dense.size(1);
  const float* data = dense.const_data_ptr<float>();
  std::vector<int64_t> best(rows, 0);
  for (int64_t b = 0; b < rows; ++b) {
    const float* row = data + b * vocab;
    for (int64_t i = 1; i < vocab; ++i) {
      if (row[i] > row[best[b]] || (std::isnan(row[i]) && !std::isnan(row[best[b]]))) {
        best[b] = i;
      }
    }
  }
  return best;
}

}  // namespace

std::vector<bool> NonFiniteRows(const at::Tensor& logits) {
  const at::Tensor rows = logits.to(at::kCPU, at::kFloat).contiguous();  // [B, vocab]
  const int64_t batch = rows.size(0), vocab = rows.size(1);
  const float* data = rows.const_data_ptr<float>();
  std::vector<bool> broken(batch, false);
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = data + b * vocab;
    bool bad = false;
    for (int64_t i = 0; i < vocab; ++i) bad |= !std::isfinite(row[i]);
    broken[b] = bad;
  }
  return broken;
}

double SampleUniform(uint64_t seed, uint64_t step) {
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ SplitMix64(step + 1));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

std::vector<std::pair<int32_t, float>> TopTokens(const at::Tensor& scores,
                                                 int32_t n, bool logprobs) {
  const int64_t vocab = scores.size(0);
  const at::Tensor nth = std::get<0>(scores.topk(std::min<int64_t>(n, vocab))).min();
  const at::Tensor keep = (scores >= nth) & scores.isfinite();
  const at::Tensor ids = keep.nonzero().view({-1});  // Ascending ids.
  const at::Tensor logp = scores.log_softmax(0).index_select(0, ids).cpu();
  std::vector<std::pair<int32_t, float>> top;
  const at::Tensor ids_cpu = ids.cpu();
  for (int64_t i = 0; i < ids_cpu.size(0); ++i) {
    top.emplace_back(static_cast<int32_t>(ids_cpu[i].item<int64_t>()),
                     logprobs ? logp[i].item<float>() : 0.0f);
  }
  if (logprobs) {
    std::stable_sort(top.begin(), top.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
  }
  if (top.size() > static_cast<size_t>(4 * n)) top.resize(4 * n);
  return top;
}

std::vector<TokenChoice> SampleTokens(const at::Tensor& logits,
                                      std::span<const SamplingInput> inputs,
                                      std::span<const int32_t> eos_ids) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) == static_cast<int64_t>(inputs.size()),
              "one logits row per sequence");
  at::Tensor scores = ScoresCopy(logits);
  ApplyEosControls(scores, inputs, eos_ids);
  ApplyRepetitionPenalty(scores, inputs);
  const std::vector<int64_t> greedy = RowArgmax(scores);
  std::vector<TokenChoice> choices(inputs.size());
  for (size_t b = 0; b < inputs.size(); ++b) {
    const SamplingParams& p = *inputs[b].params;
    at::Tensor row = scores[b];
    if (p.sample) {
      row.div_(p.temperature);
      TopK(row, p.top_k);
      TopP(row, p.top_p);
      TypicalP(row, p.typical_p);
      choices[b].token = Draw(row, p.seed, inputs[b].generated.size());
    } else {
      choices[b].token = static_cast<int32_t>(greedy[b]);
    }
    FillDetails(row, p, choices[b]);
  }
  return choices;
}

}  // namespace fms
