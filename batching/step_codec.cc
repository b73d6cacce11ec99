#include "batching/step_codec.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fms {
namespace {

template <typename T, typename Repeated>
std::vector<T> ToVector(const Repeated& repeated) {
  return std::vector<T>(repeated.begin(), repeated.end());
}

// SamplingParams crosses the seam field by field. A new field changes this
// size: add it to proto/worker.proto, to both functions below and to FullPlan
// in step_codec_test.cc (whose test also checks that every proto field is set).
static_assert(sizeof(SamplingParams) == 56, "SamplingParams changed: update the codec");

void ToProto(const SamplingParams& p, worker::SamplingParams* out) {
  out->set_sample(p.sample);
  out->set_temperature(p.temperature);
  out->set_top_k(p.top_k);
  out->set_top_p(p.top_p);
  out->set_typical_p(p.typical_p);
  out->set_seed(p.seed);
  out->set_repetition_penalty(p.repetition_penalty);
  out->set_length_penalty_start(p.length_penalty_start);
  out->set_length_penalty_decay(p.length_penalty_decay);
  out->set_min_new_tokens(p.min_new_tokens);
  out->set_logprobs(p.logprobs);
  out->set_ranks(p.ranks);
  out->set_top_n(p.top_n);
}

SamplingParams FromProto(const worker::SamplingParams& p) {
  return {.sample = p.sample(),
          .temperature = p.temperature(),
          .top_k = p.top_k(),
          .top_p = p.top_p(),
          .typical_p = p.typical_p(),
          .seed = p.seed(),
          .repetition_penalty = p.repetition_penalty(),
          .length_penalty_start = p.length_penalty_start(),
          .length_penalty_decay = p.length_penalty_decay(),
          .min_new_tokens = p.min_new_tokens(),
          .logprobs = p.logprobs(),
          .ranks = p.ranks(),
          .top_n = p.top_n()};
}

void ToProto(const TokenDetails& d, worker::TokenDetails* out) {
  out->set_logprob(d.logprob);
  out->set_rank(d.rank);
  for (const auto& [token, logprob] : d.top) {
    worker::TopToken* top = out->add_top();
    top->set_token(token);
    top->set_logprob(logprob);
  }
}

TokenDetails FromProto(const worker::TokenDetails& d) {
  TokenDetails details{.logprob = d.logprob(), .rank = d.rank()};
  for (const worker::TopToken& top : d.top()) {
    details.top.emplace_back(top.token(), top.logprob());
  }
  return details;
}

absl::Status CheckVersion(uint32_t version, const char* what) {
  if (version == kWorkerProtocolVersion) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what, " has worker protocol version ", version, ", expected ",
                   kWorkerProtocolVersion));
}

}  // namespace

worker::StepPlan ToProto(const StepPlan& plan) {
  worker::StepPlan proto;
  proto.set_version(kWorkerProtocolVersion);
  proto.set_step(plan.step);
  for (const NewSequence& s : plan.new_sequences) {
    worker::NewSequence* out = proto.add_new_sequences();
    out->set_id(s.id);
    out->mutable_prompt()->Add(s.prompt.begin(), s.prompt.end());
    ToProto(s.sampling, out->mutable_sampling());
    out->set_adapter(s.adapter);
  }
  for (const ScheduledChunk& c : plan.chunks) {
    worker::ScheduledChunk* out = proto.add_chunks();
    out->set_id(c.id);
    out->mutable_token_ids()->Add(c.token_ids.begin(), c.token_ids.end());
    out->set_context_len(c.context_len);
    out->mutable_cached_blocks()->Add(c.cached_blocks.begin(), c.cached_blocks.end());
    out->mutable_new_blocks()->Add(c.new_blocks.begin(), c.new_blocks.end());
    out->set_sample(c.sample);
    out->set_prompt_details(c.prompt_details);
  }
  proto.mutable_finished()->Add(plan.finished.begin(), plan.finished.end());
  proto.mutable_preempted()->Add(plan.preempted.begin(), plan.preempted.end());
  return proto;
}

absl::StatusOr<StepPlan> FromProto(const worker::StepPlan& proto) {
  if (absl::Status s = CheckVersion(proto.version(), "StepPlan"); !s.ok()) return s;
  StepPlan plan{.step = proto.step()};
  for (const worker::NewSequence& s : proto.new_sequences()) {
    plan.new_sequences.push_back({.id = s.id(),
                                  .prompt = ToVector<int32_t>(s.prompt()),
                                  .sampling = FromProto(s.sampling()),
                                  .adapter = s.adapter()});
  }
  for (const worker::ScheduledChunk& c : proto.chunks()) {
    plan.chunks.push_back({.id = c.id(),
                           .token_ids = ToVector<int32_t>(c.token_ids()),
                           .context_len = c.context_len(),
                           .cached_blocks = ToVector<int32_t>(c.cached_blocks()),
                           .new_blocks = ToVector<int32_t>(c.new_blocks()),
                           .sample = c.sample(),
                           .prompt_details = c.prompt_details()});
  }
  plan.finished = ToVector<SequenceId>(proto.finished());
  plan.preempted = ToVector<SequenceId>(proto.preempted());
  return plan;
}

worker::StepResult ToProto(const StepResult& result) {
  worker::StepResult proto;
  proto.set_version(kWorkerProtocolVersion);
  proto.set_step(result.step);
  for (const SequenceOutput& o : result.outputs) {
    worker::SequenceOutput* out = proto.add_outputs();
    out->set_id(o.id);
    out->set_token(o.token);
    ToProto(o.details, out->mutable_details());
    for (const TokenDetails& d : o.prompt_details) ToProto(d, out->add_prompt_details());
    out->set_non_finite_logits(o.non_finite_logits);
  }
  worker::StepTimings* t = proto.mutable_timings();
  t->set_decode_us(result.timings.decode_us);
  t->set_wait_us(result.timings.wait_us);
  t->set_prepare_us(result.timings.prepare_us);
  t->set_forward_us(result.timings.forward_us);
  t->set_sample_us(result.timings.sample_us);
  t->set_encode_us(result.timings.encode_us);
  return proto;
}

absl::StatusOr<StepResult> FromProto(const worker::StepResult& proto) {
  if (absl::Status s = CheckVersion(proto.version(), "StepResult"); !s.ok()) return s;
  StepResult result{.step = proto.step()};
  for (const worker::SequenceOutput& o : proto.outputs()) {
    SequenceOutput output{.id = o.id(), .token = o.token(),
                          .details = FromProto(o.details()),
                          .non_finite_logits = o.non_finite_logits()};
    for (const worker::TokenDetails& d : o.prompt_details()) {
      output.prompt_details.push_back(FromProto(d));
    }
    result.outputs.push_back(std::move(output));
  }
  const worker::StepTimings& t = proto.timings();
  result.timings = {.decode_us = t.decode_us(), .wait_us = t.wait_us(),
                    .prepare_us = t.prepare_us(), .forward_us = t.forward_us(),
                    .sample_us = t.sample_us(), .encode_us = t.encode_us()};
  return result;
}

}  // namespace fms
