// Per-sequence token-selection parameters, as resolved from a TGIS request
// (shared/docs/tgis-api.md section 1.4). Plain data: part of the seam between
// the scheduler and the model.

#ifndef FMS_BATCHING_SAMPLING_PARAMS_H_
#define FMS_BATCHING_SAMPLING_PARAMS_H_

#include <cstdint>

namespace fms {

struct SamplingParams {
  bool sample = false;        // false: greedy.
  float temperature = 1.0f;   // SAMPLE: > 0.
  int32_t top_k = 0;          // SAMPLE: 0 disables.
  float top_p = 1.0f;         // SAMPLE: 1 disables.
  float typical_p = 0.0f;     // SAMPLE: 0 or >= 1 disables.
  uint64_t seed = 0;          // SAMPLE: the per-sequence generator's seed.
  float repetition_penalty = 1.0f;  // 1 disables.
  // Exponential EOS boost once generated - length_penalty_start > 0;
  // a decay_factor <= 1 disables it.
  uint32_t length_penalty_start = 0;
  float length_penalty_decay = 1.0f;
  uint32_t min_new_tokens = 0;  // EOS ids are masked until this many.
  // Details of each chosen token.
  bool logprobs = false;
  bool ranks = false;
  int32_t top_n = 0;

  bool operator==(const SamplingParams&) const = default;
};

}  // namespace fms

#endif  // FMS_BATCHING_SAMPLING_PARAMS_H_
