// A generation request as the scheduler sees it (token ids, resolved
// parameters), and the per-token events it produces.

#ifndef FMS_BATCHING_REQUEST_H_
#define FMS_BATCHING_REQUEST_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "batching/sampling_params.h"
#include "batching/step.h"

namespace fms {

using Clock = std::chrono::steady_clock;

// TGIS's StopReason values (proto/generation.proto).
enum class FinishReason {
  kNotFinished = 0,
  kMaxTokens = 1,
  kEosToken = 2,
  kCancelled = 3,
  kTimeLimit = 4,
  kStopSequence = 5,
  kTokenLimit = 6,
  kError = 7,
};

struct StoppingCriteria {
  uint32_t max_new_tokens = 20;  // >= 1.
  // max_new_tokens was reduced to fit the server's max_sequence_length:
  // reaching it is TOKEN_LIMIT, not MAX_TOKENS.
  bool max_new_tokens_clamped = false;
  uint32_t min_new_tokens = 0;   // No EOS stop before this many tokens.
  std::optional<Clock::time_point> deadline;  // time_limit_millis.
};

struct Request {
  SequenceId id = 0;
  // Token ids after truncation, BOS included; a prompt-tuning adapter's
  // virtual tokens first (step.h NewSequence).
  std::vector<int32_t> prompt;
  std::string adapter;  // Loaded on the engine before submission; empty: none.
  SamplingParams sampling;
  StoppingCriteria stopping;
  bool prompt_details = false;  // TGIS input_tokens details.
  Clock::time_point arrival;
  bool internal = false;  // The server's own (warm-up): kept out of request metrics.
};

// One event for one request: a new token, the end, or both. Every request
// gets exactly one final event (finish != kNotFinished).
struct SequenceEvent {
  SequenceId id = 0;
  bool has_token = false;
  int32_t token = 0;
  TokenDetails details;
  std::vector<TokenDetails> prompt_details;  // With the first token only.
  uint32_t generated = 0;  // Tokens generated so far, this one included.
  FinishReason finish = FinishReason::kNotFinished;
  absl::Status error;  // finish == kError.
  // On the first event after the request reached the batch: when it did
  // (tgi_request_inference_duration runs from here).
  std::optional<Clock::time_point> admitted;
};

}  // namespace fms

#endif  // FMS_BATCHING_REQUEST_H_
