#include "batching/scheduler.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "batching/check.h"

namespace fms {

Scheduler::Scheduler(SchedulerConfig config)
    : config_(std::move(config)),
      allocator_(config_.num_blocks),
      cost_(config_.mixed_step_ratio) {}

absl::Status Scheduler::Add(Request request) {
  FMS_CHECK(!sequences_.count(request.id), "duplicate sequence id");
  if (request.stopping.min_new_tokens > request.stopping.max_new_tokens ||
      request.stopping.max_new_tokens == 0) {
    return absl::InvalidArgumentError("need 0 <= min_new_tokens <= max_new_tokens, 1 <= max_new_tokens");
  }
  const int64_t tokens = static_cast<int64_t>(request.prompt.size()) +
                         request.stopping.max_new_tokens;
  const int64_t blocks = (tokens + config_.block_size - 1) / config_.block_size;
  if (blocks > config_.num_blocks || request.prompt.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request needs ", blocks, " KV cache blocks, the cache has ",
        config_.num_blocks));
  }
  Sequence seq{.request = std::move(request)};
  seq.prompt_details_pending = seq.request.prompt_details;
  const SequenceId id = seq.request.id;
  sequences_.emplace(id, std::move(seq));
  waiting_.push_back(id);
  return absl::OkStatus();
}

void Scheduler::Finish(SequenceId id, FinishReason reason) {
  auto it = sequences_.find(id);
  if (it != sequences_.end() && it->second.pending_finish == FinishReason::kNotFinished) {
    it->second.pending_finish = reason;
  }
}

void Scheduler::Release(SequenceId id) {
  auto it = sequences_.find(id);
  FMS_CHECK(it != sequences_.end(), "release of an unknown sequence");
  allocator_.Free(it->second.blocks);
  if (it->second.known_to_workers) to_release_.push_back(id);
  std::erase(running_, id);
  std::erase(waiting_, id);
  sequences_.erase(it);
}

void Scheduler::ApplyFinishes(Clock::time_point now, std::vector<SequenceEvent>* events) {
  std::vector<std::pair<SequenceId, FinishReason>> ended;
  for (const auto& [id, seq] : sequences_) {
    if (seq.pending_finish != FinishReason::kNotFinished) {
      ended.emplace_back(id, seq.pending_finish);
    } else if (seq.request.stopping.deadline && now > *seq.request.stopping.deadline &&
               seq.waiting_steps > 0 && !seq.running) {
      // Expired in the queue, behind other work. A request that can start at
      // its first plan always gets one token (TGIS: even with a 1 ms limit).
      ended.emplace_back(id, FinishReason::kTimeLimit);
    }
  }
  for (const auto& [id, reason] : ended) {
    events->push_back({.id = id,
                       .generated = static_cast<uint32_t>(sequences_.at(id).generated.size()),
                       .finish = reason});
    Release(id);
  }
}

void Scheduler::Preempt(Sequence& seq) {
  allocator_.Free(seq.blocks);
  seq.blocks.clear();
  seq.num_computed = 0;
  seq.registered = 0;
  seq.cached_blocks.clear();
  if (seq.known_to_workers) preempted_.push_back(seq.request.id);
  seq.running = false;
  std::erase(running_, seq.request.id);
  waiting_.push_front(seq.request.id);
  ++preemptions_;
}

void Scheduler::ExtendKeys(Sequence& seq, int64_t blocks) const {
  const int64_t size = config_.block_size;
  std::vector<int32_t> tokens(static_cast<size_t>(size));
  while (static_cast<int64_t>(seq.keys.size()) < blocks) {
    const int64_t first = static_cast<int64_t>(seq.keys.size()) * size;
    for (int64_t i = 0; i < size; ++i) tokens[i] = seq.token(first + i);
    seq.keys.push_back(ChainBlockKey(
        seq.keys.empty() ? PrefixRoot(seq.request.adapter) : seq.keys.back(), tokens));
  }
}

std::vector<int32_t> Scheduler::MatchPrefix(Sequence& seq) const {
  if (!config_.enable_prefix_caching || seq.prompt_details_pending) return {};
  // The block of the last token is always computed: its logits are sampled.
  const int64_t candidates = (seq.total() - 1) / config_.block_size;
  ExtendKeys(seq, candidates);
  std::vector<int32_t> hits;
  for (int64_t i = 0; i < candidates; ++i) {
    const std::optional<int32_t> block = allocator_.Lookup(seq.keys[i]);
    if (!block.has_value()) break;
    hits.push_back(*block);
  }
  return hits;
}

void Scheduler::RegisterFullBlocks(Sequence& seq) {
  if (!config_.enable_prefix_caching) return;
  const int64_t full = seq.num_computed / config_.block_size;
  ExtendKeys(seq, full);
  for (; seq.registered < full; ++seq.registered) {
    // False for a block whose content another block already holds (two equal
    // prompts computed at once): that one stays uncached.
    allocator_.Register(seq.blocks[seq.registered], seq.keys[seq.registered]);
  }
}

bool Scheduler::ReserveBlocks(Sequence& seq, int64_t tokens, std::vector<int32_t>* added) {
  const int64_t need = (tokens + config_.block_size - 1) / config_.block_size -
                       static_cast<int64_t>(seq.blocks.size());
  if (need <= 0) return true;
  while (allocator_.num_free() < need) {
    // The youngest running sequence not already in this plan.
    auto victim = std::find_if(running_.rbegin(), running_.rend(), [&](SequenceId id) {
      return id != seq.request.id && sequences_.at(id).scheduled_in_step != step_;
    });
    if (victim == running_.rend()) return false;
    Preempt(sequences_.at(*victim));
  }
  *added = *allocator_.Allocate(need);
  seq.blocks.insert(seq.blocks.end(), added->begin(), added->end());
  return true;
}

bool Scheduler::Holdable(const Sequence& seq) const {
  return seq.generated.empty() && seq.held_steps < config_.max_waiting_tokens;
}

int64_t Scheduler::ReadyPromptWork() {
  const auto work = [&](const Sequence& seq, int64_t cached) -> int64_t {
    return seq.pending() > 1 ? seq.pending() - cached - Holdable(seq) : 0;
  };
  int64_t total = 0;
  for (SequenceId id : running_) total += work(sequences_.at(id), 0);
  int64_t slots = config_.max_batch_size - static_cast<int64_t>(running_.size());
  int64_t free = allocator_.num_free();
  for (SequenceId id : waiting_) {
    Sequence& seq = sequences_.at(id);
    const int64_t need = (seq.total() + config_.block_size - 1) / config_.block_size;
    if (slots-- <= 0 || need > free) break;
    free -= need;
    total += work(seq, static_cast<int64_t>(MatchPrefix(seq).size()) * config_.block_size);
  }
  return total;
}

bool Scheduler::TrySchedule(Sequence& seq, int64_t max_tokens, StepPlan* plan) {
  int64_t n = std::min({seq.pending(), max_tokens, budget_});
  if (Held(seq)) n = std::min(n, seq.pending() - 1);
  if (n <= 0 || num_scheduled_ >= config_.max_batch_size) {
    return false;
  }
  std::vector<int32_t> added;
  if (!ReserveBlocks(seq, seq.num_computed + n, &added)) return false;
  ScheduledChunk chunk{
      .id = seq.request.id,
      .context_len = seq.num_computed,
      .cached_blocks = std::exchange(seq.cached_blocks, {}),
      .new_blocks = added,
      .sample = seq.num_computed + n == seq.total(),
      .prompt_details = seq.prompt_details_pending};
  chunk.token_ids.reserve(n);
  for (int64_t i = seq.num_computed; i < seq.num_computed + n; ++i) {
    chunk.token_ids.push_back(seq.token(i));
  }
  plan->chunks.push_back(std::move(chunk));
  in_flight_.push_back({seq.request.id, n, plan->chunks.back().sample});
  seq.scheduled_in_step = step_;
  ++num_scheduled_;
  budget_ -= n;
  return true;
}

bool Scheduler::TryAdmit(SequenceId id, StepPlan* plan) {
  Sequence& seq = sequences_.at(id);
  if (num_scheduled_ >= config_.max_batch_size ||
      static_cast<int64_t>(running_.size()) >= config_.max_batch_size) {
    return false;
  }
  // Admission never preempts: the first chunk must fit the free blocks,
  // less the cached ones it takes out of the free list.
  const std::vector<int32_t> hits = MatchPrefix(seq);
  const int64_t num_hits = static_cast<int64_t>(hits.size());
  const int64_t cached = num_hits * config_.block_size;
  int64_t n = std::min(seq.pending() - cached, budget_);
  if (Held(seq)) n = std::min(n, seq.pending() - cached - 1);
  int64_t free = allocator_.num_free();
  for (int32_t block : hits) free -= allocator_.ref_count(block) == 0;
  const int64_t need = (cached + n + config_.block_size - 1) / config_.block_size - num_hits;
  if (n <= 0 || need > free) return false;
  if (!seq.known_to_workers) {
    plan->new_sequences.push_back(
        {.id = id, .prompt = seq.request.prompt, .sampling = seq.request.sampling,
         .adapter = seq.request.adapter});
    seq.known_to_workers = true;
  }
  if (config_.enable_prefix_caching && !seq.prompt_details_pending) {
    prefix_queries_ += seq.total();
    prefix_hits_ += cached;
  }
  for (int32_t block : hits) allocator_.Share(block);
  seq.blocks = hits;
  seq.cached_blocks = hits;
  seq.num_computed = cached;
  seq.registered = num_hits;
  std::erase(waiting_, id);
  running_.push_back(id);
  seq.running = true;
  FMS_CHECK(TrySchedule(seq, n, plan), "admitted chunk must schedule");
  return true;
}

bool Scheduler::BurstOverflows() {
  int64_t decodes = 0;
  for (SequenceId id : running_) {
    const Sequence& seq = sequences_.at(id);
    decodes += seq.pending() == 1 && !seq.generated.empty();
  }
  decodes = std::min(decodes, config_.max_batch_size);
  return ReadyPromptWork() > config_.max_tokens_per_step - decodes;
}

StepPlan Scheduler::Schedule(Clock::time_point now, std::vector<SequenceEvent>* events) {
  ApplyFinishes(now, events);
  StepPlan plan{.step = ++step_};
  plan.finished = std::exchange(to_release_, {});
  budget_ = config_.max_tokens_per_step;
  num_scheduled_ = 0;
  preempted_.clear();
  in_flight_.clear();
  hold_ = config_.hold_burst_first_tokens && BurstOverflows();
  for (SequenceId id : std::vector<SequenceId>(running_)) {  // 1. decodes
    Sequence& seq = sequences_.at(id);
    if (seq.pending() == 1 && seq.running) {
      TrySchedule(seq, 1, &plan);
    }
  }
  last_decodes_ = num_scheduled_;
  if (const std::optional<int64_t> prompt = cost_.PromptBudget(last_decodes_)) {
    budget_ = std::min(budget_, *prompt);
  }
  for (SequenceId id : std::vector<SequenceId>(waiting_.begin(), waiting_.end())) {  // 2.
    if (sequences_.at(id).waiting_steps >= config_.max_waiting_tokens &&
        !TryAdmit(id, &plan)) {
      break;
    }
  }
  for (SequenceId id : std::vector<SequenceId>(running_)) {  // 3. prompt chunks
    Sequence& seq = sequences_.at(id);
    if (seq.pending() > 1 && seq.running && seq.scheduled_in_step != step_) {
      TrySchedule(seq, seq.pending(), &plan);
    }
  }
  while (!waiting_.empty() && TryAdmit(waiting_.front(), &plan)) {  // 4. FIFO
  }
  for (SequenceId id : waiting_) ++sequences_.at(id).waiting_steps;
  for (SequenceId id : running_) sequences_.at(id).held_steps += Held(sequences_.at(id));
  tokens_last_step_ = 0;
  for (const ScheduledChunk& chunk : plan.chunks) {
    tokens_last_step_ += static_cast<int64_t>(chunk.token_ids.size());
  }
  plan.preempted = preempted_;
  return plan;
}

FinishReason Scheduler::StopReason(const Sequence& seq, int32_t token,
                                   Clock::time_point now) const {
  const StoppingCriteria& stop = seq.request.stopping;
  const uint32_t generated = static_cast<uint32_t>(seq.generated.size());
  if (stop.deadline && now > *stop.deadline) return FinishReason::kTimeLimit;
  if (generated < stop.min_new_tokens) return FinishReason::kNotFinished;
  const auto& eos = config_.eos_token_ids;
  if (std::find(eos.begin(), eos.end(), token) != eos.end()) return FinishReason::kEosToken;
  if (generated >= stop.max_new_tokens) {
    return stop.max_new_tokens_clamped ? FinishReason::kTokenLimit : FinishReason::kMaxTokens;
  }
  return FinishReason::kNotFinished;
}

std::vector<SequenceEvent> Scheduler::Update(const StepResult& result, Clock::time_point now) {
  std::vector<SequenceEvent> events;
  size_t next_output = 0;
  for (const InFlight& chunk : std::exchange(in_flight_, {})) {
    Sequence& seq = sequences_.at(chunk.id);
    seq.num_computed += chunk.num_tokens;
    RegisterFullBlocks(seq);
    if (seq.num_computed >= static_cast<int64_t>(seq.request.prompt.size())) {
      seq.prompt_details_pending = false;
    }
    if (!chunk.sample) continue;
    FMS_CHECK(next_output < result.outputs.size() &&
                  result.outputs[next_output].id == chunk.id,
              "step result does not match the plan");
    const SequenceOutput& out = result.outputs[next_output++];
    if (out.non_finite_logits) {  // No token; the other sequences go on.
      events.push_back({.id = chunk.id,
                        .generated = static_cast<uint32_t>(seq.generated.size()),
                        .finish = FinishReason::kError,
                        .error = absl::InternalError(
                            "the model produced NaN or infinite logits")});
      Release(chunk.id);
      continue;
    }
    seq.generated.push_back(out.token);
    SequenceEvent event{.id = chunk.id, .has_token = true, .token = out.token,
                        .details = out.details, .prompt_details = out.prompt_details,
                        .generated = static_cast<uint32_t>(seq.generated.size()),
                        .finish = StopReason(seq, out.token, now)};
    events.push_back(std::move(event));
    if (events.back().finish != FinishReason::kNotFinished) Release(chunk.id);
  }
  return events;
}

std::vector<SequenceEvent> Scheduler::Fail(const absl::Status& status) {
  std::vector<SequenceEvent> events;
  for (const InFlight& chunk : std::exchange(in_flight_, {})) {
    if (!sequences_.count(chunk.id)) continue;
    events.push_back({.id = chunk.id,
                      .generated = static_cast<uint32_t>(sequences_.at(chunk.id).generated.size()),
                      .finish = FinishReason::kError,
                      .error = status});
    Release(chunk.id);
  }
  return events;
}

SchedulerStats Scheduler::stats() const {
  return {.waiting = static_cast<int64_t>(waiting_.size()),
          .running = static_cast<int64_t>(running_.size()),
          .free_blocks = allocator_.num_free(),
          .preemptions = preemptions_,
          .tokens_last_step = tokens_last_step_,
          .cached_blocks = allocator_.num_cached(),
          .prefix_queries = prefix_queries_,
          .prefix_hits = prefix_hits_};
}

}  // namespace fms
