#include "batching/plan_checker.h"

#include <cmath>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fms {
namespace {

absl::Status Refuse(SequenceId id, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("refused step plan: sequence ", id, ": ", why));
}

bool SamplingIsSane(const SamplingParams& p) {
  for (float value : {p.temperature, p.top_p, p.typical_p, p.repetition_penalty,
                      p.length_penalty_decay}) {
    if (!std::isfinite(value)) return false;
  }
  if (p.sample && !(p.temperature > 0 && p.top_p > 0 && p.top_p <= 1)) return false;
  return p.top_k >= 0 && p.top_n >= 0 && p.repetition_penalty > 0;
}

}  // namespace

PlanChecker::PlanChecker(PlanLimits limits)
    : limits_(limits), owner_(static_cast<size_t>(limits.num_blocks), kFree) {}

int64_t PlanChecker::num_owned_blocks() const {
  int64_t owned = 0;
  for (SequenceId owner : owner_) owned += owner != kFree;
  return owned;
}

void PlanChecker::Free(Held& held) {
  for (int32_t block : held.blocks) owner_[block] = kFree;
  held.blocks.clear();
  held.cached = 0;
}

absl::Status PlanChecker::CheckTokens(const std::vector<int32_t>& ids, SequenceId id) const {
  for (int32_t token : ids) {
    if (token < 0 || token >= limits_.vocab_size) {
      return Refuse(id, absl::StrCat("token id ", token, " outside the vocabulary of ",
                                     limits_.vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::Status PlanChecker::CheckNew(const StepPlan& plan) const {
  std::unordered_set<SequenceId> seen;
  for (const NewSequence& s : plan.new_sequences) {
    if (held_.count(s.id) || !seen.insert(s.id).second) return Refuse(s.id, "sent twice");
    if (s.prompt.empty()) return Refuse(s.id, "empty prompt");
    if (absl::Status st = CheckTokens(s.prompt, s.id); !st.ok()) return st;
    if (!SamplingIsSane(s.sampling)) return Refuse(s.id, "bad sampling parameters");
  }
  return absl::OkStatus();
}

absl::Status PlanChecker::CheckChunks(const StepPlan& plan) const {
  std::unordered_set<SequenceId> is_new, seen;
  for (const NewSequence& s : plan.new_sequences) is_new.insert(s.id);
  std::unordered_set<int32_t> claimed;
  for (const ScheduledChunk& c : plan.chunks) {
    const auto it = held_.find(c.id);
    if (it == held_.end() && !is_new.count(c.id)) return Refuse(c.id, "not held by this worker");
    if (!seen.insert(c.id).second) return Refuse(c.id, "two chunks in one step");
    const int64_t cached = it == held_.end() ? 0 : it->second.cached;
    const int64_t blocks = it == held_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size());
    if (c.token_ids.empty()) return Refuse(c.id, "a chunk of no tokens");
    if (c.context_len != cached) {
      return Refuse(c.id, absl::StrCat("context_len ", c.context_len, " but ", cached,
                                       " positions are cached"));
    }
    if (absl::Status st = CheckTokens(c.token_ids, c.id); !st.ok()) return st;
    for (int32_t block : c.new_blocks) {
      if (block < 0 || block >= limits_.num_blocks) {
        return Refuse(c.id, absl::StrCat("block ", block, " outside the cache of ",
                                         limits_.num_blocks));
      }
      if (owner_[block] != kFree || !claimed.insert(block).second) {
        return Refuse(c.id, absl::StrCat("block ", block, " is not free"));
      }
    }
    const int64_t end = c.context_len + static_cast<int64_t>(c.token_ids.size());
    const int64_t room = (blocks + static_cast<int64_t>(c.new_blocks.size())) * limits_.block_size;
    if (end > room) {
      return Refuse(c.id, absl::StrCat("positions up to ", end, " but blocks for ", room));
    }
  }
  return absl::OkStatus();
}

absl::Status PlanChecker::Accept(const StepPlan& plan) {
  for (SequenceId id : plan.finished) {
    if (auto it = held_.find(id); it != held_.end()) {
      Free(it->second);
      held_.erase(it);
    }
  }
  for (SequenceId id : plan.preempted) {
    if (auto it = held_.find(id); it != held_.end()) Free(it->second);
  }
  if (absl::Status s = CheckNew(plan); !s.ok()) return s;
  if (absl::Status s = CheckChunks(plan); !s.ok()) return s;
  for (const NewSequence& s : plan.new_sequences) held_.emplace(s.id, Held{});
  for (const ScheduledChunk& c : plan.chunks) {
    Held& held = held_.at(c.id);
    for (int32_t block : c.new_blocks) {
      owner_[block] = c.id;
      held.blocks.push_back(block);
    }
    held.cached = c.context_len + static_cast<int64_t>(c.token_ids.size());
  }
  return absl::OkStatus();
}

}  // namespace fms
