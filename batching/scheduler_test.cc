// Timeline tests of the Scheduler against the FakeEngine (which checks that
// every plan is runnable). Each test writes out the plans it expects, one
// line per step: "id:tokens" per chunk, "+" for a sampled token.

#include "batching/scheduler.h"

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "batching/fake_engine.h"
#include "gtest/gtest.h"

namespace fms {
namespace {

constexpr int32_t kEos = 2;

class Timeline {
 public:
  explicit Timeline(SchedulerConfig config)
      : scheduler_(Config(config)),
        engine_({.num_blocks = config.num_blocks, .block_size = config.block_size,
                 .vocab_size = 1000, .eos_token_ids = {kEos}}) {}

  static SchedulerConfig Config(SchedulerConfig config) {
    config.eos_token_ids = {kEos};
    return config;
  }

  // Adds a request whose prompt is `length` tokens 10, 11, ...
  void Add(SequenceId id, int64_t length, uint32_t max_new_tokens,
           StoppingCriteria stopping = {}, std::string adapter = "",
           bool prompt_details = false) {
    Request request{.id = id, .adapter = std::move(adapter),
                    .prompt_details = prompt_details};
    for (int64_t i = 0; i < length; ++i) request.prompt.push_back(10 + i);
    request.stopping = stopping;
    request.stopping.max_new_tokens = max_new_tokens;
    ASSERT_TRUE(scheduler_.Add(request).ok());
  }

  // Runs one step at `now`; returns the plan as "id:n[+] ..." and collects events.
  std::string Step(Clock::time_point now = Clock::time_point()) {
    const StepPlan plan = scheduler_.Schedule(now, &events_);
    int64_t decodes = 0, prompt_tokens = 0;  // A decode: a chunk of a sequence with a token.
    for (const ScheduledChunk& c : plan.chunks) {
      (Tokens(c.id) > 0 ? decodes : prompt_tokens) += static_cast<int64_t>(c.token_ids.size());
    }
    auto result = engine_.Step(plan);
    if (machine) scheduler_.ObserveStepTime(machine(decodes, prompt_tokens));
    std::vector<SequenceEvent> events =
        result.ok() ? scheduler_.Update(*result, now) : scheduler_.Fail(result.status());
    events_.insert(events_.end(), events.begin(), events.end());
    std::vector<std::string> parts;
    for (const ScheduledChunk& c : plan.chunks) {
      parts.push_back(absl::StrCat(c.id, ":", c.token_ids.size(), c.sample ? "+" : ""));
    }
    return absl::StrJoin(parts, " ");
  }

  // The final event of `id`, or kNotFinished.
  FinishReason FinalReason(SequenceId id) const {
    for (const SequenceEvent& e : events_) {
      if (e.id == id && e.finish != FinishReason::kNotFinished) return e.finish;
    }
    return FinishReason::kNotFinished;
  }
  int Tokens(SequenceId id) const {
    int n = 0;
    for (const SequenceEvent& e : events_) n += (e.id == id && e.has_token);
    return n;
  }

  // When set, the seconds each step takes, reported to the scheduler's cost
  // model (mixed_step_ratio).
  std::function<double(int64_t decodes, int64_t prompt_tokens)> machine;
  Scheduler scheduler_;
  FakeEngine engine_;
  std::vector<SequenceEvent> events_;
};

TEST(Scheduler, AdmitsFifoUnderBatchSizeAndDecodesEveryStep) {
  Timeline t({.max_batch_size = 2, .max_tokens_per_step = 64, .num_blocks = 16,
              .block_size = 4});
  t.Add(1, 3, 2);
  t.Add(2, 5, 3);
  t.Add(3, 2, 1);
  EXPECT_EQ(t.Step(), "1:3+ 2:5+");  // 3 waits: batch size 2
  EXPECT_EQ(t.Step(), "1:1+ 2:1+");  // 1 ends with 2 tokens
  EXPECT_EQ(t.Step(), "2:1+ 3:2+");  // 3 admitted in 1's slot; 2 ends, 3 ends
  EXPECT_EQ(t.Step(), "");
  EXPECT_EQ(t.FinalReason(1), FinishReason::kMaxTokens);
  EXPECT_EQ(t.Tokens(2), 3);
  EXPECT_EQ(t.FinalReason(3), FinishReason::kMaxTokens);
  EXPECT_EQ(t.scheduler_.stats().free_blocks, 16);
}

TEST(Scheduler, ChunksLongPromptsUnderTheTokenBudgetWhileDecodesFlow) {
  Timeline t({.max_batch_size = 4, .max_tokens_per_step = 8, .num_blocks = 32,
              .block_size = 4});
  t.Add(1, 4, 10);
  EXPECT_EQ(t.Step(), "1:4+");
  t.Add(2, 20, 1);
  EXPECT_EQ(t.Step(), "1:1+ 2:7");   // decode first, 7 tokens of budget left
  EXPECT_EQ(t.Step(), "1:1+ 2:7");
  EXPECT_EQ(t.Step(), "1:1+ 2:6+");  // last chunk samples
  EXPECT_EQ(t.FinalReason(2), FinishReason::kMaxTokens);
  EXPECT_EQ(t.Tokens(1), 4);
}

TEST(Scheduler, WaitingRequestIsAdmittedAfterMaxWaitingTokensSteps) {
  // A long prompt keeps the budget busy; request 2 would wait for all of it.
  Timeline t({.max_batch_size = 4, .max_tokens_per_step = 6,
              .max_waiting_tokens = 2, .num_blocks = 64, .block_size = 4});
  t.Add(1, 30, 1);
  t.Add(2, 2, 1);
  EXPECT_EQ(t.Step(), "1:6");        // 2 waits (1 step)
  EXPECT_EQ(t.Step(), "1:6");        // 2 waits (2 steps)
  EXPECT_EQ(t.Step(), "2:2+ 1:4");   // 2 goes first now
  EXPECT_EQ(t.FinalReason(2), FinishReason::kMaxTokens);
  EXPECT_EQ(t.Step(), "1:6");
}

TEST(Scheduler, BurstStartsItsStreamsTogetherAndNeverHoldsARunningStream) {
  Timeline t({.max_batch_size = 4, .max_tokens_per_step = 8, .num_blocks = 32,
              .block_size = 4, .hold_burst_first_tokens = true});
  t.Add(1, 4, 10);
  EXPECT_EQ(t.Step(), "1:4+");
  t.Add(2, 6, 4);  // 5 + 5 tokens before the last ones: more than 7 of budget
  t.Add(3, 6, 4);
  EXPECT_EQ(t.Step(), "1:1+ 2:5 3:2");  // 2 stops short of its last token
  EXPECT_EQ(t.Step(), "1:1+ 2:1+ 3:4+");  // the rest fits: both start
  EXPECT_EQ(t.Step(), "1:1+ 2:1+ 3:1+");
  EXPECT_EQ(t.Tokens(1), 4);
}

TEST(Scheduler, BurstHoldsAFirstTokenAtMostMaxWaitingTokensSteps) {
  Timeline t({.max_batch_size = 4, .max_tokens_per_step = 4, .max_waiting_tokens = 2,
              .num_blocks = 64, .block_size = 4, .hold_burst_first_tokens = true});
  t.Add(1, 3, 1);
  t.Add(2, 20, 1);
  EXPECT_EQ(t.Step(), "1:2 2:2");
  EXPECT_EQ(t.Step(), "2:4");      // 1 waits at its last token
  EXPECT_EQ(t.Step(), "1:1+ 2:3");  // held twice: it goes
  EXPECT_EQ(t.FinalReason(1), FinishReason::kMaxTokens);
  EXPECT_EQ(t.Step(), "2:4");
  EXPECT_EQ(t.Step(), "2:4");
  EXPECT_EQ(t.Step(), "2:3+");
}

TEST(Scheduler, MixedStepCapSpreadsPromptsButHoldsNoArrivalAgainstIt) {
  // 10 ms a step, 3 ms a decode, 0.5 ms a prompt token: at ratio 2 a step
  // beside one decode carries (10 + 3) / 0.5 = 26 prompt tokens.
  Timeline t({.max_batch_size = 4, .max_tokens_per_step = 256, .mixed_step_ratio = 2,
              .num_blocks = 128, .block_size = 4, .hold_burst_first_tokens = true});
  t.machine = [](int64_t decodes, int64_t prompt_tokens) {
    return 0.010 + 0.003 * decodes + 0.0005 * prompt_tokens;
  };
  t.Add(1, 40, 30);
  EXPECT_EQ(t.Step(), "1:40+");
  EXPECT_EQ(t.Step(), "1:1+");
  t.Add(2, 8, 2);
  EXPECT_EQ(t.Step(), "1:1+ 2:8+");
  EXPECT_EQ(t.Step(), "1:1+ 2:1+");
  t.Add(3, 60, 2);  // Alone, a long prompt is spread over steps.
  EXPECT_EQ(t.Step(), "1:1+ 3:26");
  EXPECT_EQ(t.Step(), "1:1+ 3:26");
  EXPECT_EQ(t.Step(), "1:1+ 3:8+");
  EXPECT_EQ(t.Step(), "1:1+ 3:1+");
  // Arrivals one after another: each streams once its prompt is in, as the
  // cap lets it; the hold (whose budget is the step's, 256 tokens) waits for
  // none. Held against the cap instead, 4 would wait at its last token while
  // 5 and 6 kept the prompt work above 26 tokens.
  t.Add(4, 20, 2);
  t.Add(5, 20, 2);
  EXPECT_EQ(t.Step(), "1:1+ 4:20+ 5:6");
  t.Add(6, 20, 2);
  EXPECT_EQ(t.Step(), "1:1+ 4:1+ 5:14+ 6:18");  // 2 decodes: 32 prompt tokens
  EXPECT_EQ(t.Step(), "1:1+ 5:1+ 6:2+");
}

TEST(Scheduler, PreemptsTheYoungestAndRecomputesIt) {
  // 6 blocks of 2: each sequence grows one block every other decode.
  Timeline t({.max_batch_size = 4, .max_tokens_per_step = 16, .num_blocks = 6,
              .block_size = 2});
  t.Add(1, 4, 6);  // 2 blocks, grows to 5
  t.Add(2, 4, 6);  // 2 blocks
  EXPECT_EQ(t.Step(), "1:4+ 2:4+");  // 4 of 6 blocks
  EXPECT_EQ(t.Step(), "1:1+ 2:1+");  // position 4: 6 of 6 blocks
  EXPECT_EQ(t.Step(), "1:1+ 2:1+");
  // Position 6 needs a 4th block for each: 2 (youngest) is preempted.
  EXPECT_EQ(t.Step(), "1:1+");
  EXPECT_EQ(t.scheduler_.stats().preemptions, 1);
  EXPECT_EQ(t.engine_.plans().back().preempted, std::vector<SequenceId>{2});
  EXPECT_EQ(t.Step(), "1:1+");
  EXPECT_EQ(t.Step(), "1:1+");  // 1 ends: 6 tokens
  EXPECT_EQ(t.Step(), "2:7+");  // recompute: prompt 4 + 3 generated, then samples
  EXPECT_EQ(t.Step(), "2:1+");
  EXPECT_EQ(t.Step(), "2:1+");
  EXPECT_EQ(t.Tokens(2), 6);
  // Recompute never repeats a token: the fake engine's tokens continue.
  std::vector<int32_t> tokens;
  for (const SequenceEvent& e : t.events_) {
    if (e.id == 2 && e.has_token) tokens.push_back(e.token);
  }
  EXPECT_EQ(tokens, (std::vector<int32_t>{14, 15, 16, 17, 18, 19}));
  EXPECT_EQ(t.scheduler_.stats().free_blocks, 6);
}

TEST(Scheduler, CancelAndFinishFreeBlocksByTheNextStep) {
  Timeline t({.max_batch_size = 4, .max_tokens_per_step = 16, .num_blocks = 8,
              .block_size = 4});
  t.Add(1, 8, 4);
  t.Add(2, 4, 4);
  t.Add(3, 4, 4);
  EXPECT_EQ(t.Step(), "1:8+ 2:4+ 3:4+");
  EXPECT_EQ(t.scheduler_.stats().free_blocks, 4);
  t.scheduler_.Finish(1, FinishReason::kCancelled);
  t.scheduler_.Finish(2, FinishReason::kStopSequence);
  EXPECT_EQ(t.Step(), "3:1+");
  EXPECT_EQ(t.engine_.plans().back().finished, (std::vector<SequenceId>{1, 2}));
  EXPECT_EQ(t.scheduler_.stats().free_blocks, 6);
  EXPECT_EQ(t.FinalReason(1), FinishReason::kCancelled);
  EXPECT_EQ(t.FinalReason(2), FinishReason::kStopSequence);
  EXPECT_EQ(t.engine_.live_sequences(), 1u);
}

TEST(Scheduler, TimeLimitInQueueAndInFlight) {
  const Clock::time_point t0;
  const auto ms = [&](int n) { return t0 + std::chrono::milliseconds(n); };
  Timeline t({.max_batch_size = 1, .max_tokens_per_step = 16, .num_blocks = 64,
              .block_size = 4});
  t.Add(1, 2, 100, {.deadline = ms(25)});
  t.Add(2, 2, 100, {.deadline = ms(15)});
  EXPECT_EQ(t.Step(ms(0)), "1:2+");
  EXPECT_EQ(t.Step(ms(10)), "1:1+");
  EXPECT_EQ(t.Step(ms(20)), "1:1+");  // 2 expired in the queue: final event
  EXPECT_EQ(t.FinalReason(2), FinishReason::kTimeLimit);
  EXPECT_EQ(t.Tokens(2), 0);
  EXPECT_EQ(t.Step(ms(30)), "1:1+");  // the token past the deadline ends 1
  EXPECT_EQ(t.FinalReason(1), FinishReason::kTimeLimit);
  EXPECT_EQ(t.Tokens(1), 4);
}

TEST(Scheduler, ExpiredOnArrivalStillGetsOneToken) {
  const Clock::time_point t0;
  Timeline t({.max_batch_size = 4, .max_tokens_per_step = 16, .num_blocks = 64,
              .block_size = 4});
  t.Add(1, 2, 100, {.deadline = t0 + std::chrono::milliseconds(1)});
  EXPECT_EQ(t.Step(t0 + std::chrono::milliseconds(5)), "1:2+");  // Late, but it starts.
  EXPECT_EQ(t.FinalReason(1), FinishReason::kTimeLimit);
  EXPECT_EQ(t.Tokens(1), 1);
}

TEST(Scheduler, StopReasonPrecedence) {
  const Clock::time_point t0;
  Timeline t({.max_batch_size = 8, .max_tokens_per_step = 64, .num_blocks = 64,
              .block_size = 4});
  // EOS as the 1st token but min_new_tokens 2: continues, then EOS again ends.
  t.Add(1, 2, 5, {.min_new_tokens = 2});
  t.engine_.Script(1, 0, kEos);
  t.engine_.Script(1, 1, kEos);
  // EOS on the last allowed token: EOS wins over MAX_TOKENS.
  t.Add(2, 2, 1);
  t.engine_.Script(2, 0, kEos);
  // Reaching a clamped max_new_tokens is TOKEN_LIMIT.
  t.Add(3, 2, 1, {.max_new_tokens_clamped = true});
  // Past its deadline while also at max tokens: TIME_LIMIT comes first.
  t.Add(4, 2, 1, {.deadline = t0});
  t.Step(t0 + std::chrono::milliseconds(1));
  t.Step(t0 + std::chrono::milliseconds(2));
  EXPECT_EQ(t.FinalReason(1), FinishReason::kEosToken);
  EXPECT_EQ(t.Tokens(1), 2);
  EXPECT_EQ(t.FinalReason(2), FinishReason::kEosToken);
  EXPECT_EQ(t.FinalReason(3), FinishReason::kTokenLimit);
  EXPECT_EQ(t.FinalReason(4), FinishReason::kTimeLimit);
}

TEST(Scheduler, FailedStepFailsExactlyItsSequences) {
  Timeline t({.max_batch_size = 2, .max_tokens_per_step = 64, .num_blocks = 16,
              .block_size = 4});
  t.Add(1, 2, 5);
  t.Add(2, 2, 5);
  t.Add(3, 2, 5);
  t.engine_.FailStep(2, absl::InternalError("device lost"));
  EXPECT_EQ(t.Step(), "1:2+ 2:2+");
  EXPECT_EQ(t.Step(), "1:1+ 2:1+");  // fails
  EXPECT_EQ(t.FinalReason(1), FinishReason::kError);
  EXPECT_EQ(t.FinalReason(2), FinishReason::kError);
  EXPECT_EQ(t.Step(), "3:2+");       // the queue goes on
  EXPECT_EQ(t.engine_.plans().back().finished, (std::vector<SequenceId>{1, 2}));
  for (int i = 0; i < 4; ++i) t.Step();
  EXPECT_EQ(t.FinalReason(3), FinishReason::kMaxTokens);
}

TEST(Scheduler, RejectsRequestsThatCanNeverFit) {
  Scheduler scheduler({.num_blocks = 2, .block_size = 4});
  Request request{.id = 1, .prompt = {1, 2, 3}};
  request.stopping.max_new_tokens = 6;  // 9 tokens: 3 blocks
  EXPECT_EQ(scheduler.Add(request).code(), absl::StatusCode::kResourceExhausted);
  request.stopping = {.max_new_tokens = 2, .min_new_tokens = 3};
  EXPECT_EQ(scheduler.Add(request).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Scheduler, PrefixCachingSkipsComputedBlocksButNeverTheLastToken) {
  Timeline t({.max_batch_size = 4, .max_tokens_per_step = 64, .num_blocks = 16,
              .block_size = 4, .enable_prefix_caching = true});
  t.Add(1, 10, 1);                       // Blocks of 4: two full, computed.
  EXPECT_EQ(t.Step(), "1:10+");
  t.Add(2, 11, 1);                       // Same first 10 tokens: 8 cached.
  EXPECT_EQ(t.Step(), "2:3+");
  EXPECT_EQ(t.engine_.plans().back().chunks[0].context_len, 8);
  t.Add(3, 8, 1);                        // All 8 cached, but the last is computed.
  EXPECT_EQ(t.Step(), "3:4+");
  t.Add(4, 10, 1, {}, "lora");           // Another adapter: nothing shared.
  EXPECT_EQ(t.Step(), "4:10+");
  t.Add(5, 10, 1, {}, "", /*prompt_details=*/true);  // Needs every prompt logit.
  EXPECT_EQ(t.Step(), "5:10+");
  const SchedulerStats stats = t.scheduler_.stats();
  EXPECT_EQ(stats.prefix_queries, 10 + 11 + 8 + 10);
  EXPECT_EQ(stats.prefix_hits, 8 + 4);
  EXPECT_EQ(stats.free_blocks, 16);      // Cached blocks count as free.
  EXPECT_GE(stats.cached_blocks, 4);
}

TEST(Scheduler, PrefixCachingMakesRecomputeAfterPreemptionCheap) {
  Timeline t({.max_batch_size = 3, .max_tokens_per_step = 64, .num_blocks = 7,
              .block_size = 4, .enable_prefix_caching = true});
  for (SequenceId id : {1, 2, 3}) t.Add(id, 8, 6);  // Equal prompts.
  EXPECT_EQ(t.Step(), "1:8+ 2:8+ 3:8+");  // 6 blocks held, 1 free; 1's are cached.
  // Each decode needs a third block: 1 takes the free one, 2 preempts 3,
  // and 3 comes straight back on 1's cached blocks, recomputing one token.
  EXPECT_EQ(t.Step(), "1:1+ 2:1+ 3:1+");
  EXPECT_EQ(t.scheduler_.stats().preemptions, 1);
  const ScheduledChunk& resumed = t.engine_.plans().back().chunks[2];
  EXPECT_EQ(resumed.context_len, 8);
  EXPECT_EQ(resumed.cached_blocks.size(), 2u);
  for (int i = 0; i < 20; ++i) t.Step();
  for (SequenceId id : {1, 2, 3}) EXPECT_EQ(t.FinalReason(id), FinishReason::kMaxTokens);
}

}  // namespace
}  // namespace fms
