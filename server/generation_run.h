// GenerationRun: one input of a Generate or GenerateStream call, from its text
// to its responses. Built on the gRPC thread (tokenize, truncate, validate
// lengths, seed), fed SequenceEvents on the batcher thread (detokenize, stop
// sequences, token details), read back on the gRPC thread as TGIS messages
// (shared/docs/tgis-api.md sections 1.5-1.9).

#ifndef FMS_SERVER_GENERATION_RUN_H_
#define FMS_SERVER_GENERATION_RUN_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "batching/request.h"
#include "proto/generation.pb.h"
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
  ServerMetrics* metrics = nullptr;  // May be null.
};

class GenerationRun {
 public:
  // Fails with INVALID_ARGUMENT when the input is too long (TGIS rows 14-15).
  // `random_seed` is used when a SAMPLE request gave none.
  static absl::StatusOr<std::unique_ptr<GenerationRun>> Create(
      const std::string& text, const ResolvedParams& params, const RunContext& context,
      uint32_t random_seed);

  // The request to submit (its id is set by the batcher).
  const Request& request() const { return request_; }
  // The metrics label of the call: "single", "batch" or "stream".
  void set_kind(std::string kind) { kind_ = std::move(kind); }
  // For the request's log line: the RPC and the caller's x-correlation-id.
  void set_log_context(std::string method, std::string correlation_id) {
    method_ = std::move(method);
    correlation_id_ = std::move(correlation_id);
  }
  uint32_t input_token_count() const { return static_cast<uint32_t>(request_.prompt.size()); }

  // Batcher thread. Returns true when a stop sequence matched: the caller
  // then ends the sequence with Finish(id, STOP_SEQUENCE).
  bool OnEvent(const SequenceEvent& event);

  // The first stream message, sent right after validation.
  fmaas::GenerationResponse FirstMessage() const;
  // Blocks for the next stream message; false at the end, with *status set
  // (OK, or the generation error). `cancelled` is polled while waiting; once
  // it says true the call returns CANCELLED.
  bool NextMessage(const std::function<bool()>& cancelled,
                   fmaas::GenerationResponse* message, absl::Status* status);
  // Blocks until the end; the unary response or the generation error.
  absl::StatusOr<fmaas::GenerationResponse> Wait(const std::function<bool()>& cancelled);

 private:
  GenerationRun(const ResolvedParams& params, const RunContext& context);
  void FillTokenInfo(int32_t token, const TokenDetails& details, fmaas::TokenInfo* info) const;
  void AddInputTokens(const SequenceEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the run; `last` is this step's token message, completed into the
  // final stream message (a new one when null).
  void Finish(FinishReason reason, const absl::Status& status,
              fmaas::GenerationResponse* last) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ResolvedParams params_;
  const RunContext context_;
  std::string input_text_;
  Request request_;
  std::unique_ptr<TextStream> text_stream_;
  std::string kind_ = "single";
  std::string method_ = "Generate";
  std::string correlation_id_;
  Clock::time_point last_token_time_;  // Batcher thread only.

  absl::Mutex mu_;
  std::deque<fmaas::GenerationResponse> outbox_ ABSL_GUARDED_BY(mu_);
  fmaas::GenerationResponse unary_ ABSL_GUARDED_BY(mu_);
  uint32_t generated_ ABSL_GUARDED_BY(mu_) = 0;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;  // By a stop sequence.
  std::string stop_sequence_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fms

#endif  // FMS_SERVER_GENERATION_RUN_H_
