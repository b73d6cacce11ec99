#include "model/llama_engine.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <span>

#include "absl/strings/str_cat.h"
#include "batching/check.h"
#include "model/sampling.h"

namespace fms {

LlamaEngine::LlamaEngine(std::unique_ptr<LlamaModel> model, const KvCacheOptions& cache)
    : model_(std::move(model)),
      cache_(model_->MakeCache(cache)),
      checker_({.vocab_size = model_->config().vocab_size,
                .num_blocks = cache_.num_blocks(),
                .block_size = cache_.block_size()}) {}

EngineInfo LlamaEngine::Info() const {
  const LlamaConfig& c = model_->config();
  return {.num_blocks = cache_.num_blocks(),
          .block_size = cache_.block_size(),
          .vocab_size = c.vocab_size,
          .max_position_embeddings = c.max_position_embeddings,
          .eos_token_ids = c.eos_token_ids,
          .non_finite_weights = model_->non_finite_weights()};
}

int64_t LlamaEngine::VirtualTokens(const Sequence& seq) {
  return seq.adapter != nullptr ? seq.adapter->virtual_tokens() : 0;
}

void LlamaEngine::AddPromptDetails(Sequence& seq, int64_t first, const at::Tensor& rows) {
  const SamplingParams& p = seq.spec.sampling;
  const int64_t prompt_len = static_cast<int64_t>(seq.spec.prompt.size());
  const int64_t virtual_tokens = VirtualTokens(seq);  // Not reported: not the caller's.
  const at::Tensor logprobs = rows.log_softmax(-1);  // [n, vocab]
  for (int64_t i = 0; i < rows.size(0); ++i) {
    const int64_t position = first + i;  // Details of the token at position + 1.
    const int64_t next = position + 1;
    // The first real token has no details (NaN), as without an adapter.
    const bool first_real = virtual_tokens > 0 ? next == virtual_tokens : position == 0;
    if (first_real) {
      seq.prompt_details.push_back({.logprob = std::numeric_limits<float>::quiet_NaN()});
    }
    if (next <= virtual_tokens) continue;
    if (next >= prompt_len) break;
    const int32_t token = seq.spec.prompt[position + 1];
    TokenDetails d;
    if (p.logprobs) d.logprob = logprobs[i][token].item<float>();
    if (p.ranks) {
      d.rank = 1 + static_cast<uint32_t>((rows[i] > rows[i][token]).sum().item<int64_t>());
    }
    if (p.top_n > 0) d.top = TopTokens(rows[i], p.top_n, p.logprobs);
    seq.prompt_details.push_back(std::move(d));
  }
}

absl::StatusOr<std::map<std::string, std::shared_ptr<const Adapter>>>
LlamaEngine::PlanAdapters(const StepPlan& plan) {
  std::map<std::string, std::shared_ptr<const Adapter>> found;
  absl::MutexLock lock(&adapters_mu_);
  for (const NewSequence& s : plan.new_sequences) {
    if (s.adapter.empty()) continue;
    auto it = adapters_.find(s.adapter);
    if (it == adapters_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the plan names adapter '", s.adapter, "', which is not loaded"));
    }
    const int64_t n = it->second->virtual_tokens();
    if (static_cast<int64_t>(s.prompt.size()) <= n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", s.id, " has no tokens after adapter '", s.adapter, "''s ", n,
          " virtual tokens"));
    }
    found.emplace(s.adapter, it->second);
  }
  return found;
}

absl::StatusOr<AdapterInfo> LlamaEngine::LoadAdapter(const std::string& id,
                                                     const std::string& dir) {
  c10::InferenceMode inference;
  absl::StatusOr<std::shared_ptr<const Adapter>> adapter;
  try {
    adapter = model_->LoadAdapter(id, dir);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading adapter '", id, "' failed: ", e.what()));
  }
  if (!adapter.ok()) return adapter.status();
  const Adapter& a = **adapter;
  AdapterInfo info{.peft_type = a.config.peft_type, .virtual_tokens = a.virtual_tokens(),
                   .rank = a.config.rank, .bytes = a.bytes};
  absl::MutexLock lock(&adapters_mu_);
  adapters_[id] = *std::move(adapter);
  return info;
}

void LlamaEngine::UnloadAdapter(const std::string& id) {
  absl::MutexLock lock(&adapters_mu_);
  adapters_.erase(id);
}

LlamaEngine::Sequence& LlamaEngine::Known(SequenceId id) {
  auto it = sequences_.find(id);
  FMS_CHECK(it != sequences_.end(), "the plan names a sequence this worker does not hold");
  return it->second;
}

absl::StatusOr<ForwardBatch> LlamaEngine::Apply(const StepPlan& plan) {
  // Forgetting comes first and always (PlanChecker does the same); then a
  // plan that adds what this worker cannot run is refused as a whole, before
  // any of it is applied. Past that, a contradiction is a bug: a crash.
  for (SequenceId id : plan.finished) sequences_.erase(id);
  for (SequenceId id : plan.preempted) {
    if (auto it = sequences_.find(id); it != sequences_.end()) it->second.blocks.clear();
  }
  auto adapters = PlanAdapters(plan);
  if (!adapters.ok()) return adapters.status();
  if (absl::Status s = checker_.Accept(plan); !s.ok()) return s;
  for (const NewSequence& s : plan.new_sequences) {
    Sequence seq{.spec = s};
    if (!s.adapter.empty()) seq.adapter = adapters->at(s.adapter);
    FMS_CHECK(sequences_.emplace(s.id, std::move(seq)).second,
              "the plan sends a sequence twice");
  }
  ForwardBatch batch;
  for (const ScheduledChunk& c : plan.chunks) {
    Sequence& seq = Known(c.id);
    seq.blocks.insert(seq.blocks.end(), c.cached_blocks.begin(), c.cached_blocks.end());
    seq.blocks.insert(seq.blocks.end(), c.new_blocks.begin(), c.new_blocks.end());
    batch.token_ids.insert(batch.token_ids.end(), c.token_ids.begin(), c.token_ids.end());
    batch.sequences.push_back({.num_tokens = static_cast<int64_t>(c.token_ids.size()),
                               .context_len = c.context_len,
                               .block_table = seq.blocks,
                               .all_logits = c.prompt_details,
                               .adapter = seq.adapter.get()});
  }
  return batch;
}

void LlamaEngine::Sample(const StepPlan& plan, const ForwardBatch& batch,
                         const at::Tensor& logits, StepResult& result) {
  std::vector<int64_t> sample_rows;
  std::vector<SamplingInput> inputs;
  int64_t row = 0;
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    const ScheduledChunk& c = plan.chunks[i];
    Sequence& seq = Known(c.id);
    const int64_t rows = batch.sequences[i].all_logits ? batch.sequences[i].num_tokens : 1;
    if (c.prompt_details) AddPromptDetails(seq, c.context_len, logits.narrow(0, row, rows));
    row += rows;
    if (!c.sample) continue;
    sample_rows.push_back(row - 1);
    // Repetition penalties see the real prompt, not the virtual tokens.
    inputs.push_back({&seq.spec.sampling,
                      std::span<const int32_t>(seq.spec.prompt).subspan(VirtualTokens(seq)),
                      seq.generated});
  }
  if (inputs.empty()) return;
  // rows [B, vocab] fp32. A row with NaN or infinity would sample garbage (or
  // make multinomial throw for the whole step): it is zeroed and flagged.
  at::Tensor rows = logits.index_select(0, at::tensor(sample_rows, at::kLong)).contiguous();
  const std::vector<bool> broken = NonFiniteRows(rows);
  const bool any_broken = std::find(broken.begin(), broken.end(), true) != broken.end();
  for (size_t b = 0; b < broken.size(); ++b) {
    if (broken[b]) rows[static_cast<int64_t>(b)].zero_();
  }
  const std::vector<TokenChoice> choices =
      SampleTokens(rows, inputs, model_->config().eos_token_ids);
  size_t k = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    if (!c.sample) continue;
    Sequence& seq = Known(c.id);
    const bool non_finite = any_broken && broken[k];
    if (!non_finite) seq.generated.push_back(choices[k].token);
    result.outputs.push_back({.id = c.id, .token = choices[k].token,
                              .details = choices[k].details,
                              .prompt_details = std::move(seq.prompt_details),
                              .non_finite_logits = non_finite});
    seq.prompt_details.clear();
    ++k;
  }
}

absl::StatusOr<StepResult> LlamaEngine::Run(const StepPlan& plan) {
  using Clock = std::chrono::steady_clock;
  auto micros = [](Clock::duration d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  };
  const Clock::time_point start = Clock::now();
  absl::StatusOr<ForwardBatch> batch = Apply(plan);
  if (!batch.ok()) return batch.status();
  StepResult result{.step = plan.step};
  if (plan.chunks.empty()) return result;
  const Clock::time_point prepared = Clock::now();
  at::Tensor logits = model_->Forward(*batch, cache_);  // [rows, vocab]
  if (!logits.defined()) return result;  // Not rank 0: rank 0 samples.
  logits = logits.cpu();
  const Clock::time_point forwarded = Clock::now();
  Sample(plan, *batch, logits, result);
  result.timings.prepare_us = micros(prepared - start);
  result.timings.forward_us = micros(forwarded - prepared);
  result.timings.sample_us = micros(Clock::now() - forwarded);
  return result;
}

absl::StatusOr<StepResult> LlamaEngine::Step(const StepPlan& plan) {
  c10::InferenceMode inference;
  try {
    return Run(plan);
  } catch (const std::exception& e) {  // A torch runtime error: the step's sequences fail.
    return absl::InternalError(absl::StrCat("model step failed: ", e.what()));
  }
}

}  // namespace fms
