// Token selection for a batch of sequences in one call, with TGIS's
// semantics (shared/docs/tgis-api.md sections 1.4 and 1.9):
//
//   EOS controls (min_new_tokens masks every EOS id; the exponential length
//   penalty boosts them) -> repetition penalty (HF: positive scores / theta,
//   negative * theta, over prompt and generated tokens) -> [SAMPLE only]
//   temperature -> top-k -> top-p -> typical-p -> draw.
//
// Greedy takes the argmax of the processed scores. A sampled draw at step t
// depends only on (seed, t): one uniform number from a counter-based
// generator, inverted through the cumulative distribution, so a sequence gets
// the same tokens whatever else shares its batch.

#ifndef FMS_MODEL_SAMPLING_H_
#define FMS_MODEL_SAMPLING_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "batching/sampling_params.h"
#include "batching/step.h"

namespace fms {

// One sequence of the batch.
struct SamplingInput {
  const SamplingParams* params = nullptr;
  std::span<const int32_t> prompt;
  std::span<const int32_t> generated;  // Its size is the step index t.
};

// The chosen token; details.logprob is of the processed distribution, rank
// is 1 + tokens with a strictly higher processed score, top the best
// candidates; each only when requested.
struct TokenChoice {
  int32_t token = 0;
  TokenDetails details;
};

// logits [B, vocab] fp32 (any device); inputs.size() == B.
std::vector<TokenChoice> SampleTokens(const at::Tensor& logits,
                                      std::span<const SamplingInput> inputs,
                                      std::span<const int32_t> eos_ids);

// Which rows of logits [B, vocab] fp32 hold a NaN or an infinity: one serial
// pass on the CPU (see ScoresCopy in sampling.cc for why not LibTorch ops).
std::vector<bool> NonFiniteRows(const at::Tensor& logits);

// The uniform number in [0, 1) that a draw at `step` with `seed` uses.
double SampleUniform(uint64_t seed, uint64_t step);

// Top-n candidates of one processed row [vocab] with TGIS's tie rules: all
// tokens scoring >= the n-th best (capped at 4n), finite only; by logprob
// descending then id when `logprobs`, else by id with logprob 0.
std::vector<std::pair<int32_t, float>> TopTokens(const at::Tensor& scores,
                                                 int32_t n, bool logprobs);

}  // namespace fms

#endif  // FMS_MODEL_SAMPLING_H_
