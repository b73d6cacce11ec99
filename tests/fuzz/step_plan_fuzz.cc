// Fuzzes what a worker does with the StepPlans it receives: protobuf decoding
// (batching/step_codec.h), then PlanChecker, which LlamaEngine runs before
// touching its state. Input: a run of plans, each a 2-byte little-endian
// length and that many bytes of worker.StepPlan wire format, applied in order
// to one worker's view (vocabulary 64, 16 blocks of 4 positions).
// Oracle: an independent model of the worker's state, updated only by
// accepted plans, in which every accepted chunk names a sequence the worker
// holds, continues at its cached length with ids inside the vocabulary, and
// leaves every block in range, enough blocks for every cached position, and
// no block in two tables unless a chunk took it as a cached block that some
// sequence had computed in full (prefix caching) and that no chunk has taken
// fresh since.

#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "batching/plan_checker.h"
#include "batching/step_codec.h"
#include "proto/worker.pb.h"
#include "tests/fuzz/fuzz_check.h"

namespace fms {
namespace {

const PlanLimits kLimits{.vocab_size = 64, .num_blocks = 16, .block_size = 4};

struct Shadow {
  int64_t cached = 0;
  std::vector<int32_t> blocks;
};

void Apply(const StepPlan& plan, std::map<SequenceId, Shadow>& held, std::set<int32_t>& full) {
  for (SequenceId id : plan.finished) held.erase(id);
  for (SequenceId id : plan.preempted) {
    if (held.count(id)) held[id] = Shadow{};
  }
  for (const NewSequence& s : plan.new_sequences) {
    FUZZ_CHECK(held.emplace(s.id, Shadow{}).second, "accepted a sequence twice");
    FUZZ_CHECK(!s.prompt.empty(), "accepted an empty prompt");
  }
  for (const ScheduledChunk& c : plan.chunks) {
    FUZZ_CHECK(held.count(c.id), "accepted a chunk of a sequence not held");
    Shadow& s = held[c.id];
    const int64_t shared = static_cast<int64_t>(c.cached_blocks.size()) * kLimits.block_size;
    FUZZ_CHECK(c.context_len == s.cached + shared, "accepted a chunk off the cached length");
    for (int32_t token : c.token_ids) {
      FUZZ_CHECK(token >= 0 && token < kLimits.vocab_size, "accepted a token outside");
    }
    for (int32_t block : c.cached_blocks) {
      FUZZ_CHECK(full.count(block), "accepted a cached block nobody computed");
    }
    for (int32_t block : c.new_blocks) full.erase(block);
    s.blocks.insert(s.blocks.end(), c.cached_blocks.begin(), c.cached_blocks.end());
    s.blocks.insert(s.blocks.end(), c.new_blocks.begin(), c.new_blocks.end());
    s.cached = c.context_len + static_cast<int64_t>(c.token_ids.size());
    for (int64_t i = 0; i < s.cached / kLimits.block_size; ++i) full.insert(s.blocks[i]);
  }
  std::map<int32_t, int> holders;
  for (const auto& [id, s] : held) {
    FUZZ_CHECK(s.cached <= static_cast<int64_t>(s.blocks.size()) * kLimits.block_size,
               "cached positions without blocks");
    for (int32_t block : s.blocks) {
      FUZZ_CHECK(block >= 0 && block < kLimits.num_blocks, "a block outside the cache");
      ++holders[block];
    }
  }
  for (const auto& [block, count] : holders) {
    FUZZ_CHECK(count == 1 || full.count(block), "a block in two tables that is not a prefix");
  }
}

}  // namespace
}  // namespace fms

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fms::PlanChecker checker(fms::kLimits);
  std::map<fms::SequenceId, fms::Shadow> held;
  std::set<int32_t> full;
  for (size_t pos = 0; pos + 2 <= size;) {
    const size_t len = data[pos] | (data[pos + 1] << 8);
    pos += 2;
    if (pos + len > size) break;
    fms::worker::StepPlan proto;
    const bool parsed = proto.ParseFromArray(data + pos, static_cast<int>(len));
    pos += len;
    if (!parsed) continue;
    auto plan = fms::FromProto(proto);
    if (!plan.ok()) continue;
    if (checker.Accept(*plan).ok()) {
      fms::Apply(*plan, held, full);
    } else {  // Refused: only the forgetting part took effect.
      fms::Apply({.finished = plan->finished, .preempted = plan->preempted}, held, full);
    }
    FUZZ_CHECK(checker.num_sequences() == held.size(), "the checker and the model disagree");
  }
  return 0;
}
