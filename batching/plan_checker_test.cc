#include "batching/plan_checker.h"

#include <cmath>
#include <string>

#include "gtest/gtest.h"

namespace fms {
namespace {

const PlanLimits kLimits{.vocab_size = 100, .num_blocks = 8, .block_size = 4};

// Sequence `id` arrives with a 6-token prompt, prefilled into blocks b0, b1.
StepPlan Prefill(SequenceId id, int32_t b0, int32_t b1, uint64_t step = 0) {
  return {.step = step,
          .new_sequences = {{.id = id, .prompt = {1, 2, 3, 4, 5, 6}}},
          .chunks = {{.id = id, .token_ids = {1, 2, 3, 4, 5, 6}, .context_len = 0,
                      .new_blocks = {b0, b1}}}};
}

StepPlan Decode(SequenceId id, int64_t context_len, std::vector<int32_t> blocks = {}) {
  return {.chunks = {{.id = id, .token_ids = {7}, .context_len = context_len,
                      .new_blocks = std::move(blocks)}}};
}

void ExpectRefused(PlanChecker& checker, const StepPlan& plan, const std::string& why) {
  const absl::Status status = checker.Accept(plan);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << why;
  EXPECT_NE(status.message().find(why), std::string::npos) << status.message();
}

TEST(PlanChecker, AcceptsWhatTheSchedulerSends) {
  PlanChecker checker(kLimits);
  ASSERT_TRUE(checker.Accept(Prefill(1, 0, 1)).ok());
  ASSERT_TRUE(checker.Accept(Decode(1, 6)).ok());
  ASSERT_TRUE(checker.Accept(Decode(1, 7)).ok());
  ASSERT_TRUE(checker.Accept(Decode(1, 8, {2})).ok());  // Position 8 needs a third block.
  EXPECT_EQ(checker.num_owned_blocks(), 3);
  // Preempted: blocks return at once and may go to another sequence in the
  // same step; the sequence comes back from context 0.
  ASSERT_TRUE(checker.Accept({.new_sequences = {{.id = 2, .prompt = {9}}},
                              .chunks = {{.id = 2, .token_ids = {9}, .new_blocks = {0}}},
                              .preempted = {1}})
                  .ok());
  ASSERT_TRUE(checker.Accept({.chunks = {{.id = 1, .token_ids = {1, 2, 3, 4, 5, 6, 7, 7, 7},
                                          .new_blocks = {1, 2, 3}}}})
                  .ok());
  ASSERT_TRUE(checker.Accept({.finished = {1, 2}}).ok());
  EXPECT_EQ(checker.num_sequences(), 0u);
  EXPECT_EQ(checker.num_owned_blocks(), 0);
}

TEST(PlanChecker, RefusesPlansThatContradictTheWorker) {
  PlanChecker checker(kLimits);
  ASSERT_TRUE(checker.Accept(Prefill(1, 0, 1)).ok());
  ExpectRefused(checker, Prefill(1, 2, 3), "sequence 1: sent twice");
  ExpectRefused(checker, Decode(5, 0, {2}), "sequence 5: not held by this worker");
  ExpectRefused(checker, Decode(1, 3), "context_len 3 but 6 positions are cached");
  ExpectRefused(checker, Decode(1, 6, {8}), "block 8 outside the cache of 8");
  ExpectRefused(checker, Decode(1, 6, {-1}), "block -1 outside");
  ExpectRefused(checker, Decode(1, 6, {0}), "block 0 is not free");
  ExpectRefused(checker, Prefill(2, 4, 4), "block 4 is not free");
  ExpectRefused(checker, Prefill(2, 4, -7), "block -7 outside");
  ExpectRefused(checker, {.chunks = {{.id = 1, .token_ids = {1, 2, 3}, .context_len = 6}}},
                "positions up to 9 but blocks for 8");
  ExpectRefused(checker, {.chunks = {{.id = 1, .token_ids = {100}, .context_len = 6}}},
                "token id 100 outside the vocabulary of 100");
  ExpectRefused(checker, {.chunks = {{.id = 1, .token_ids = {}, .context_len = 6}}},
                "a chunk of no tokens");
  ExpectRefused(checker, {.chunks = {Decode(1, 6).chunks[0], Decode(1, 6).chunks[0]}},
                "two chunks in one step");
  ExpectRefused(checker, {.new_sequences = {{.id = 3, .prompt = {}}}}, "empty prompt");
  StepPlan nan = Prefill(3, 4, 5);
  nan.new_sequences[0].sampling.repetition_penalty = std::nanf("");
  ExpectRefused(checker, nan, "bad sampling parameters");
  // Nothing of a refused plan was kept: sequence 1 continues as before.
  EXPECT_EQ(checker.num_sequences(), 1u);
  EXPECT_EQ(checker.num_owned_blocks(), 2);
  EXPECT_TRUE(checker.Accept(Decode(1, 6)).ok());
}

TEST(PlanChecker, ForgettingIsIdempotent) {
  PlanChecker checker(kLimits);
  ASSERT_TRUE(checker.Accept(Prefill(1, 0, 1)).ok());
  // A refused plan's new sequence is then finished by the scheduler, which
  // the worker never took: ignored, and the rest of the plan still applies.
  ExpectRefused(checker, Prefill(2, 1, 2), "block 1 is not free");
  ASSERT_TRUE(checker.Accept({.finished = {2, 1, 1}, .preempted = {9}}).ok());
  EXPECT_EQ(checker.num_sequences(), 0u);
  EXPECT_EQ(checker.num_owned_blocks(), 0);
  EXPECT_TRUE(checker.Accept(Prefill(2, 1, 2)).ok());
}

TEST(PlanChecker, CachedBlocksMustHoldAComputedPrefix) {
  PlanChecker checker(kLimits);
  ASSERT_TRUE(checker.Accept(Prefill(1, 0, 1)).ok());  // Block 0 full, block 1 half.
  auto shared = [](SequenceId id, std::vector<int32_t> cached, int64_t context_len,
                   std::vector<int32_t> fresh) {
    return StepPlan{.new_sequences = {{.id = id, .prompt = {1, 2, 3, 4, 5}}},
                    .chunks = {{.id = id, .token_ids = {5}, .context_len = context_len,
                                .cached_blocks = std::move(cached),
                                .new_blocks = std::move(fresh)}}};
  };
  ExpectRefused(checker, shared(2, {1}, 4, {2}), "block 1 holds no computed prefix");
  ExpectRefused(checker, shared(2, {0}, 0, {2}), "context_len 0 but 4 positions are cached");
  ExpectRefused(checker, shared(2, {0}, 4, {0}), "block 0 is not free");
  ExpectRefused(checker, shared(2, {9}, 4, {2}), "block 9 outside");
  ASSERT_TRUE(checker.Accept(shared(2, {0}, 4, {2})).ok());  // Held by 1 and 2.
  // Still cached when no sequence holds it, until handed out fresh.
  ASSERT_TRUE(checker.Accept({.finished = {1, 2}}).ok());
  EXPECT_EQ(checker.num_owned_blocks(), 0);
  ASSERT_TRUE(checker.Accept(shared(3, {0}, 4, {2})).ok());
  ASSERT_TRUE(checker.Accept({.finished = {3}}).ok());
  ASSERT_TRUE(checker.Accept(Prefill(4, 3, 0)).ok());  // Block 0 fresh: its prefix is gone.
  ExpectRefused(checker, shared(5, {0}, 4, {2}), "block 0 holds no computed prefix");
}

}  // namespace
}  // namespace fms
