// TGIS request parameters -> resolved, validated generation parameters
// (shared/docs/tgis-api.md sections 1.4 and 2.1). Defaults and checks run in
// TGIS's order with TGIS's exact INVALID_ARGUMENT messages, plus stricter
// checks TGIS lacks (NaN and infinite floats, unknown enum values,
// unsupported adapter features), which come first.

#ifndef FMS_SERVER_VALIDATION_H_
#define FMS_SERVER_VALIDATION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "batching/sampling_params.h"
#include "proto/generation.pb.h"

namespace fms {

struct ValidationLimits {
  uint32_t max_new_tokens = 1024;       // Server MAX_NEW_TOKENS (clamped).
  uint32_t max_sequence_length = 2048;  // Server MAX_SEQUENCE_LENGTH.
  bool default_include_stop_seqs = true;
};

// Everything a request asks for, after TGIS's defaulting.
struct ResolvedParams {
  SamplingParams sampling;  // seed is filled per input when seed_given is false.
  bool seed_given = false;
  uint32_t max_new_tokens = 20;
  uint32_t min_new_tokens = 0;
  uint32_t time_limit_millis = 0;  // 0: none.
  std::vector<std::string> stop_sequences;
  bool include_stop_sequence = true;
  uint32_t truncate_input_tokens = 0;  // 0: never.
  bool input_text = false;
  bool generated_tokens = false;
  bool input_tokens = false;
};

// `params` may be null (all defaults).
absl::StatusOr<ResolvedParams> ResolveParameters(const fmaas::Parameters* params,
                                                 const ValidationLimits& limits);

// Per input, after tokenization and truncation (rows 14 and 15 of 2.1); an
// input of no tokens is refused as well. `prefix_length`: a prompt-tuning
// adapter's virtual tokens.
absl::Status ValidateInputLength(uint32_t input_tokens, uint32_t prefix_length,
                                 uint32_t min_new_tokens, uint32_t max_sequence_length);

}  // namespace fms

#endif  // FMS_SERVER_VALIDATION_H_
