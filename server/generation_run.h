// GenerationRun: one input of a Generate or GenerateStream call, from its text
// to its responses (shared/docs/tgis-api.md sections 1.5-1.9): built from the text
// (tokenize, truncate, validate lengths, seed), fed the sequence's events
// (detokenize, stop sequences, token details), read back as TGIS messages.
//
// Single-threaded: everything runs on the RPC's own thread. The batcher
// thread only queues events (EventQueue), so text work never delays a model
// step.

#ifndef FMS_SERVER_GENERATION_RUN_H_
#define FMS_SERVER_GENERATION_RUN_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "batching/request.h"
#include "proto/generation.pb.h"
#include "server/adapter_store.h"
#include "server/metrics.h"
#include "server/text_stream.h"
#include "server/tokenizer.h"
#include "server/validation.h"

namespace fms {

// What every run of one server shares; immutable after start-up.
struct RunContext {
  const Tokenizer* tokenizer = nullptr;
  uint32_t max_sequence_length = 0;
  std::vector<int32_t> eos_token_ids;
  bool output_special_tokens = false;
  bool add_special_tokens = true;  // ADD_SPECIAL_TOKENS.
  ServerMetrics* metrics = nullptr;  // May be null.
};

class GenerationRun {
 public:
  // Fails with INVALID_ARGUMENT when the input is too long (TGIS rows 14-15).
  // `random_seed` is used when a SAMPLE request gave none.
  // `adapter` (may be null) is held until the run is destroyed; a
  // prompt-tuning adapter's virtual tokens count against the sequence length
  // (TGIS's "prefix length") but not in input_token_count.
  static absl::StatusOr<std::unique_ptr<GenerationRun>> Create(
      const std::string& text, const ResolvedParams& params, const RunContext& context,
      uint32_t random_seed, std::shared_ptr<const AdapterLease> adapter = nullptr);

  // The request to submit (its id is set by the batcher).
  const Request& request() const { return request_; }
  // The metrics label of the call: "single", "batch" or "stream".
  void set_kind(std::string kind) { kind_ = std::move(kind); }
  // For the request's log line: the RPC and the caller's x-correlation-id.
  void set_log_context(std::string method, std::string correlation_id) {
    method_ = std::move(method);
    correlation_id_ = std::move(correlation_id);
  }
  uint32_t input_token_count() const { return static_cast<uint32_t>(input_ids_.size()); }

  // The sequence's next event, which the batcher delivered at `received`.
  // Returns true when a stop sequence matched: the caller then ends the
  // sequence with Batcher::Finish(id, STOP_SEQUENCE); events that still
  // arrive for it are ignored.
  bool OnEvent(const SequenceEvent& event, Clock::time_point received = Clock::now());

  // The first stream message, sent right after validation.
  fmaas::GenerationResponse FirstMessage() const;
  // Moves out the next stream message made by OnEvent; false when none.
  bool NextMessage(fmaas::GenerationResponse* message);
  // The final event was seen.
  bool done() const { return done_; }
  // Once done: the unary response, or the generation error.
  absl::StatusOr<fmaas::GenerationResponse> Result() const;
  // Once done: seconds from admission to the end; unset if never admitted.
  std::optional<double> inference_seconds() const { return inference_seconds_; }

 private:
  GenerationRun(const ResolvedParams& params, const RunContext& context);
  void FillTokenInfo(int32_t token, const TokenDetails& details, fmaas::TokenInfo* info) const;
  void AddInputTokens(const SequenceEvent& event);
  void RecordTokenTime(Clock::time_point received);
  // Ends the run; `last` is this step's token message, completed into the
  // final stream message (a new one when null).
  void Finish(FinishReason reason, absl::Status status, fmaas::GenerationResponse* last);

  const ResolvedParams params_;
  const RunContext context_;
  std::string input_text_;
  std::vector<int32_t> input_ids_;  // The text's tokens (request_.prompt less virtual ones).
  std::shared_ptr<const AdapterLease> adapter_;
  Request request_;
  std::unique_ptr<TextStream> text_stream_;
  std::string kind_ = "single";
  std::string method_ = "Generate";
  std::string correlation_id_;
  Clock::time_point last_token_time_;
  std::optional<Clock::time_point> admitted_;  // From the final event.
  std::optional<double> inference_seconds_;

  std::deque<fmaas::GenerationResponse> outbox_;
  fmaas::GenerationResponse unary_;
  uint32_t generated_ = 0;
  bool done_ = false;
  bool stopped_ = false;  // By a stop sequence.
  std::string stop_sequence_;
  absl::Status status_;
};

}  // namespace fms

#endif  // FMS_SERVER_GENERATION_RUN_H_
