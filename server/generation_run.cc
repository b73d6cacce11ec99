#include "server/generation_run.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/request_log.h"

namespace fms {
namespace {

fmaas::StopReason ToStopReason(FinishReason reason) {
  return static_cast<fmaas::StopReason>(static_cast<int>(reason));
}

}  // namespace

GenerationRun::GenerationRun(const ResolvedParams& params, const RunContext& context)
    : params_(params), context_(context) {}

absl::StatusOr<std::unique_ptr<GenerationRun>> GenerationRun::Create(
    const std::string& text, const ResolvedParams& params, const RunContext& context,
    uint32_t random_seed, std::shared_ptr<const AdapterLease> adapter) {
  std::unique_ptr<GenerationRun> run(new GenerationRun(params, context));
  const uint32_t prefix = adapter ? static_cast<uint32_t>(adapter->virtual_tokens()) : 0;
  run->input_text_ = text;
  auto prompt = EncodePrompt(*context.tokenizer, text, params.truncate_input_tokens,
                             context.add_special_tokens);
  if (!prompt.ok()) return prompt.status();
  std::vector<int32_t>& ids = prompt->encoding.ids;
  // Generate only (TGIS): a truncated prompt starts with BOS again, written
  // over the first kept token. Tokenize reports the plain last N tokens.
  const int32_t bos = context.tokenizer->bos_id();
  if (prompt->truncated && bos >= 0 && context.add_special_tokens) ids.front() = bos;
  const uint32_t n = static_cast<uint32_t>(ids.size());
  if (absl::Status s =
          ValidateInputLength(n, prefix, params.min_new_tokens, context.max_sequence_length);
      !s.ok()) {
    return s;
  }
  Request& request = run->request_;
  request.prompt.assign(prefix, 0);  // Placeholders the worker's model replaces.
  request.prompt.insert(request.prompt.end(), ids.begin(), ids.end());
  run->input_ids_ = std::move(ids);
  if (adapter) request.adapter = adapter->engine_id();
  run->adapter_ = std::move(adapter);
  request.sampling = params.sampling;
  if (params.sampling.sample && !params.seed_given) request.sampling.seed = random_seed;
  request.prompt_details = params.input_tokens;
  request.arrival = Clock::now();
  // max_new_tokens shrinks to fit max_sequence_length: reaching it is TOKEN_LIMIT.
  const uint32_t room = context.max_sequence_length - n - prefix;
  request.stopping.max_new_tokens = std::min(params.max_new_tokens, room);
  request.stopping.max_new_tokens_clamped = room < params.max_new_tokens;
  request.stopping.min_new_tokens = params.min_new_tokens;
  if (params.time_limit_millis > 0) {
    request.stopping.deadline =
        request.arrival + std::chrono::milliseconds(params.time_limit_millis);
  }
  run->text_stream_ = std::make_unique<TextStream>(
      context.tokenizer, run->input_ids_,
      TextStreamOptions{.stop_sequences = params.stop_sequences,
                        .include_stop_sequence = params.include_stop_sequence,
                        .output_special_tokens = context.output_special_tokens,
                        .eos_token_ids = context.eos_token_ids});
  return run;
}

void GenerationRun::FillTokenInfo(int32_t token, const TokenDetails& details,
                                  fmaas::TokenInfo* info) const {
  info->set_text(std::string(context_.tokenizer->IdToPiece(token)));
  if (params_.sampling.logprobs) info->set_logprob(details.logprob);
  if (params_.sampling.ranks) info->set_rank(details.rank);
  for (const auto& [id, logprob] : details.top) {
    fmaas::TokenInfo::TopToken* top = info->add_top_tokens();
    top->set_text(std::string(context_.tokenizer->IdToPiece(id)));
    if (params_.sampling.logprobs) top->set_logprob(logprob);
  }
}

fmaas::GenerationResponse GenerationRun::FirstMessage() const {
  fmaas::GenerationResponse first;
  first.set_input_token_count(input_token_count());
  if (params_.input_text) first.set_text(input_text_);
  if (request_.sampling.sample) first.set_seed(request_.sampling.seed);
  return first;
}

void GenerationRun::AddInputTokens(const SequenceEvent& event) {
  fmaas::GenerationResponse message;
  for (size_t i = 0; i < event.prompt_details.size() && i < input_ids_.size(); ++i) {
    fmaas::TokenInfo* info = message.add_input_tokens();
    FillTokenInfo(input_ids_[i], event.prompt_details[i], info);
    if (i == 0) {  // TGIS: NaN logprob, rank 0 and no top tokens at position 0.
      if (params_.sampling.logprobs) info->set_logprob(std::nanf(""));
      info->set_rank(0);
      info->clear_top_tokens();
    }
  }
  message.set_input_token_count(message.input_tokens_size());
  *unary_.mutable_input_tokens() = message.input_tokens();
  outbox_.push_back(std::move(message));
}

void GenerationRun::RecordTokenTime(Clock::time_point received) {
  if (context_.metrics != nullptr) {
    const auto since = received - (generated_ == 0 ? request_.arrival : last_token_time_);
    const double seconds = std::chrono::duration<double>(since).count();
    generated_ == 0 ? context_.metrics->FirstToken(seconds)
                    : context_.metrics->InterToken(seconds);
  }
  last_token_time_ = received;
}

bool GenerationRun::OnEvent(const SequenceEvent& event, Clock::time_point received) {
  if (done_) return false;
  if (event.admitted.has_value()) admitted_ = event.admitted;
  if (!event.prompt_details.empty()) AddInputTokens(event);
  bool stop_now = false;
  std::optional<fmaas::GenerationResponse> message;
  if (event.has_token) {
    RecordTokenTime(received);
    generated_ = event.generated;
    auto delta = text_stream_->Add(event.token);
    if (!delta.ok()) {
      Finish(FinishReason::kError, absl::UnknownError(absl::StrCat(
          "Request failed during detokenization: ", delta.status().message())), nullptr);
      return true;
    }
    message.emplace();
    message->set_generated_token_count(generated_);
    message->set_text(delta->text);
    if (params_.generated_tokens) {
      FillTokenInfo(event.token, event.details, message->add_tokens());
      FillTokenInfo(event.token, event.details, unary_.add_tokens());
    }
    const bool at_max = event.finish == FinishReason::kMaxTokens ||
                        event.finish == FinishReason::kTokenLimit;
    if (delta->stopped && at_max) {
      auto rest = text_stream_->Uncut();  // MAX_TOKENS wins.
      message->set_text(message->text() + (rest.ok() ? *rest : ""));
    } else if (delta->stopped) {
      stopped_ = stop_now = true;
      stop_sequence_ = delta->stop_sequence;
    }
  }
  if (stop_now) {
    Finish(FinishReason::kStopSequence, absl::OkStatus(), &*message);
  } else if (event.finish != FinishReason::kNotFinished) {
    absl::Status status =
        event.finish == FinishReason::kError
            ? absl::UnknownError(absl::StrCat("Request failed during generation: ",
                                              event.error.message()))
            : absl::OkStatus();
    Finish(event.finish, std::move(status), message ? &*message : nullptr);
  } else if (message && (!message->text().empty() || message->tokens_size() > 0)) {
    outbox_.push_back(*std::move(message));  // Empty deltas are suppressed.
  }
  return stop_now;
}

// Ends the run: the last outbox message (if it is this step's token message)
// becomes the final message, else a final message is added.
void GenerationRun::Finish(FinishReason reason, absl::Status status,
                           fmaas::GenerationResponse* last) {
  done_ = true;
  std::string rest;  // Text still held back, released at the end.
  if (status.ok() && !stopped_) {
    auto flushed = text_stream_->Flush();
    if (flushed.ok()) {
      rest = *std::move(flushed);
    } else {
      status = absl::UnknownError(absl::StrCat("Request failed during detokenization: ",
                                               flushed.status().message()));
    }
  }
  status_ = status;
  const Clock::time_point end = Clock::now();
  const double seconds = std::chrono::duration<double>(end - request_.arrival).count();
  if (admitted_.has_value()) {
    inference_seconds_ = std::chrono::duration<double>(end - *admitted_).count();
  }
  LogRequest({.method = method_,
              .correlation_id = correlation_id_,
              .input_tokens = input_token_count(),
              .generated_tokens = generated_,
              .stop_reason = status.ok() ? fmaas::StopReason_Name(ToStopReason(reason)) : "ERROR",
              .seconds = seconds,
              .error = std::string(status.message())});
  if (ServerMetrics* m = context_.metrics) {
    if (!status.ok()) {
      m->RequestFailed("generate");
    } else if (reason == FinishReason::kCancelled) {
      m->RequestFailed("cancelled");
    } else if (reason == FinishReason::kTimeLimit && generated_ == 0) {
      m->RequestFailed("timeout");  // Expired in the queue.
    } else {
      m->InputSucceeded(kind_, fmaas::StopReason_Name(ToStopReason(reason)),
                        input_token_count(), generated_, seconds, inference_seconds_);
    }
  }
  if (!status.ok()) return;
  outbox_.push_back(last != nullptr ? std::move(*last) : fmaas::GenerationResponse());
  fmaas::GenerationResponse& final_message = outbox_.back();
  final_message.set_text(final_message.text() + rest);
  final_message.set_generated_token_count(generated_);
  final_message.set_stop_reason(ToStopReason(reason));
  if (reason == FinishReason::kStopSequence) final_message.set_stop_sequence(stop_sequence_);
  if (request_.sampling.sample) final_message.set_seed(request_.sampling.seed);
  // The unary response.
  unary_.set_input_token_count(input_token_count());
  unary_.set_generated_token_count(generated_);
  unary_.set_text((params_.input_text ? input_text_ : "") + text_stream_->text());
  unary_.set_stop_reason(ToStopReason(reason));
  if (reason == FinishReason::kStopSequence) unary_.set_stop_sequence(stop_sequence_);
  if (request_.sampling.sample) unary_.set_seed(request_.sampling.seed);
}

bool GenerationRun::NextMessage(fmaas::GenerationResponse* message) {
  if (outbox_.empty()) return false;
  *message = std::move(outbox_.front());
  outbox_.pop_front();
  return true;
}

absl::StatusOr<fmaas::GenerationResponse> GenerationRun::Result() const {
  if (!status_.ok()) return status_;
  return unary_;
}

}  // namespace fms
