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
    : limits_(limits),
      holders_(static_cast<size_t>(limits.num_blocks), 0),
      full_(static_cast<size_t>(limits.num_blocks), false) {}

int64_t PlanChecker::num_owned_blocks() const {
  int64_t owned = 0;
  for (int32_t holders : holders_) owned += holders > 0;
  return owned;
}

void PlanChecker::Free(Held& held) {
  for (int32_t block : held.blocks) --holders_[block];
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

absl::Status PlanChecker::CheckBlock(int32_t block, SequenceId id) const {
  if (block < 0 || block >= limits_.num_blocks) {
    return Refuse(id, absl::StrCat("block ", block, " outside the cache of ", limits_.num_blocks));
  }
  return absl::OkStatus();
}

absl::Status PlanChecker::CheckChunks(const StepPlan& plan) const {
  std::unordered_set<SequenceId> is_new, seen;
  for (const NewSequence& s : plan.new_sequences) is_new.insert(s.id);
  std::unordered_set<int32_t> fresh, shared;  // Blocks this plan hands out.
  for (const ScheduledChunk& c : plan.chunks) {
    const auto it = held_.find(c.id);
    if (it == held_.end() && !is_new.count(c.id)) return Refuse(c.id, "not held by this worker");
    if (!seen.insert(c.id).second) return Refuse(c.id, "two chunks in one step");
    const int64_t cached = it == held_.end() ? 0 : it->second.cached;
    int64_t blocks = it == held_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size());
    if (c.token_ids.empty()) return Refuse(c.id, "a chunk of no tokens");
    if (!c.cached_blocks.empty() && cached != blocks * limits_.block_size) {
      return Refuse(c.id, "cached blocks after a block table that is not full");
    }
    for (int32_t block : c.cached_blocks) {
      if (absl::Status st = CheckBlock(block, c.id); !st.ok()) return st;
      if (!full_[block] || fresh.count(block)) {
        return Refuse(c.id, absl::StrCat("block ", block, " holds no computed prefix"));
      }
      shared.insert(block);
    }
    const int64_t expected =
        cached + static_cast<int64_t>(c.cached_blocks.size()) * limits_.block_size;
    if (c.context_len != expected) {
      return Refuse(c.id, absl::StrCat("context_len ", c.context_len, " but ", expected,
                                       " positions are cached"));
    }
    if (absl::Status st = CheckTokens(c.token_ids, c.id); !st.ok()) return st;
    for (int32_t block : c.new_blocks) {
      if (absl::Status st = CheckBlock(block, c.id); !st.ok()) return st;
      if (holders_[block] != 0 || shared.count(block) || !fresh.insert(block).second) {
        return Refuse(c.id, absl::StrCat("block ", block, " is not free"));
      }
    }
    blocks += static_cast<int64_t>(c.cached_blocks.size() + c.new_blocks.size());
    const int64_t end = c.context_len + static_cast<int64_t>(c.token_ids.size());
    if (end > blocks * limits_.block_size) {
      return Refuse(c.id, absl::StrCat("positions up to ", end, " but blocks for ",
                                       blocks * limits_.block_size));
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
    for (int32_t block : c.cached_blocks) {
      ++holders_[block];
      held.blocks.push_back(block);
    }
    for (int32_t block : c.new_blocks) {
      ++holders_[block];
      full_[block] = false;
      held.blocks.push_back(block);
    }
    held.cached = c.context_len + static_cast<int64_t>(c.token_ids.size());
    for (int64_t i = c.context_len / limits_.block_size; i < held.cached / limits_.block_size;
         ++i) {
      full_[held.blocks[i]] = true;
    }
  }
  return absl::OkStatus();
}

}  // namespace fms
