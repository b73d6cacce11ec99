#include "server/validation.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fms {
namespace {

constexpr char kStopSequencesMessage[] =
    "can specify at most 6 non-empty stop sequences, each not more than 240 UTF8 bytes";

absl::Status Invalid(std::string message) {
  return absl::InvalidArgumentError(std::move(message));
}

// Checks TGIS does not make: every float finite, every enum known, no
// feature we do not support silently ignored.
absl::Status StrictChecks(const fmaas::Parameters& p) {
  const struct {
    const char* name;
    float value;
  } floats[] = {{"temperature", p.sampling().temperature()},
                {"top_p", p.sampling().top_p()},
                {"typical_p", p.sampling().typical_p()},
                {"repetition_penalty", p.decoding().repetition_penalty()},
                {"length_penalty.decay_factor", p.decoding().length_penalty().decay_factor()}};
  for (const auto& f : floats) {
    if (!std::isfinite(f.value)) return Invalid(absl::StrCat(f.name, " must be a finite number"));
  }
  if (!fmaas::DecodingMethod_IsValid(p.method())) {
    return Invalid(absl::StrCat("unknown decoding method ", p.method()));
  }
  if (p.decoding().guided_case() != fmaas::DecodingParameters::GUIDED_NOT_SET) {
    return Invalid("guided decoding is not supported by this server");
  }
  return absl::OkStatus();
}

void ResolveSampling(const fmaas::Parameters& p, ResolvedParams* r) {
  if (p.method() != fmaas::SAMPLE) return;  // GREEDY ignores `sampling`.
  const fmaas::SamplingParameters& s = p.sampling();
  r->sampling.sample = true;
  r->sampling.temperature = s.has_temperature() ? s.temperature() : 0.0f;
  r->sampling.top_k = static_cast<int32_t>(s.top_k());  // u32 >= 2^31: negative.
  r->sampling.top_p = s.top_p() != 0 ? s.top_p() : 1.0f;
  r->sampling.typical_p = s.typical_p();
  r->seed_given = s.has_seed();
  r->sampling.seed = s.seed();
}

// Rows 1-11 of TGIS's validation, in order.
absl::Status CheckTgisRules(const fmaas::Parameters& p, const ResolvedParams& r,
                            const ValidationLimits& limits) {
  const SamplingParams& s = r.sampling;
  if (s.sample && s.temperature != 0 && s.temperature < 0.05f) {
    return Invalid("temperature must be >= 0.05");
  }
  if (s.top_p <= 0 || s.top_p > 1) return Invalid("top_p must be > 0.0 and <= 1.0");
  if (s.typical_p > 1) return Invalid("typical_p must be <= 1.0");
  if (s.top_k < 0) return Invalid("top_k must be strictly positive");
  if (r.max_new_tokens > limits.max_new_tokens) {
    return Invalid(absl::StrCat("max_new_tokens must be <= ", limits.max_new_tokens));
  }
  if (r.min_new_tokens > r.max_new_tokens) {
    return Invalid("min_new_tokens must be <= max_new_tokens");
  }
  if (s.repetition_penalty <= 0) return Invalid("repetition_penalty must be > 0.0");
  if (p.decoding().has_length_penalty()) {
    const float decay = p.decoding().length_penalty().decay_factor();
    if (decay < 1.0f || decay > 10.0f) {
      return Invalid("length_penalty must be >= 1.0 and <= 10.0");
    }
  }
  if (r.stop_sequences.size() > 6) return Invalid(kStopSequencesMessage);
  if ((s.logprobs || s.ranks || s.top_n > 0) && !r.input_tokens && !r.generated_tokens) {
    return Invalid("must request input and/or generated tokens to request extra token detail");
  }
  for (const std::string& stop : r.stop_sequences) {
    if (stop.empty() || stop.size() > 240) return Invalid(kStopSequencesMessage);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ResolvedParams> ResolveParameters(const fmaas::Parameters* params,
                                                 const ValidationLimits& limits) {
  static const fmaas::Parameters kDefaults;
  const fmaas::Parameters& p = params != nullptr ? *params : kDefaults;
  if (absl::Status s = StrictChecks(p); !s.ok()) return s;
  ResolvedParams r;
  r.truncate_input_tokens = p.truncate_input_tokens();
  const fmaas::ResponseOptions& response = p.response();
  r.input_text = response.input_text();
  r.generated_tokens = response.generated_tokens();
  r.input_tokens = response.input_tokens();
  r.sampling.logprobs = response.token_logprobs();
  r.sampling.ranks = response.token_ranks();
  r.sampling.top_n = static_cast<int32_t>(response.top_n_tokens());
  if (p.decoding().repetition_penalty() != 0) {
    r.sampling.repetition_penalty = p.decoding().repetition_penalty();
  }
  if (p.decoding().has_length_penalty()) {
    r.sampling.length_penalty_start = p.decoding().length_penalty().start_index();
    r.sampling.length_penalty_decay = p.decoding().length_penalty().decay_factor();
  }
  const fmaas::StoppingCriteria& stopping = p.stopping();
  r.max_new_tokens = stopping.max_new_tokens() != 0 ? stopping.max_new_tokens() : 20;
  r.min_new_tokens = stopping.min_new_tokens();
  r.time_limit_millis = stopping.time_limit_millis();
  r.stop_sequences.assign(stopping.stop_sequences().begin(), stopping.stop_sequences().end());
  r.include_stop_sequence = stopping.has_include_stop_sequence()
                                ? stopping.include_stop_sequence()
                                : limits.default_include_stop_seqs;
  ResolveSampling(p, &r);
  if (absl::Status s = CheckTgisRules(p, r, limits); !s.ok()) return s;
  if (r.sampling.sample && r.sampling.temperature == 0) r.sampling.temperature = 1.0f;
  r.sampling.min_new_tokens = r.min_new_tokens;
  return r;
}

absl::Status ValidateInputLength(uint32_t input_tokens, uint32_t prefix_length,
                                 uint32_t min_new_tokens, uint32_t max_sequence_length) {
  // An empty text with a tokenizer that adds no BOS (SmolLM2, Qwen2): the
  // model has nothing to attend to. vLLM refuses it too.
  if (input_tokens == 0) {
    return Invalid("the input text has no tokens (empty, and the tokenizer adds no BOS token)");
  }
  const uint64_t total = uint64_t{input_tokens} + prefix_length;
  if (total >= max_sequence_length) {
    return Invalid(absl::StrCat("input tokens (", input_tokens, ") plus prefix length (",
                                prefix_length, ") must be < ", max_sequence_length));
  }
  if (total + min_new_tokens > max_sequence_length) {
    return Invalid(absl::StrCat("input tokens (", input_tokens, ") plus prefix length (",
                                prefix_length, ") plus min_new_tokens (", min_new_tokens,
                                ") must be <= ", max_sequence_length));
  }
  return absl::OkStatus();
}

}  // namespace fms
