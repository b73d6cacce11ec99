// Randomized property test: 10,000 requests with random arrival times,
// lengths, limits, cancellations, deadlines and injected step failures
// against a small KV pool. The FakeEngine checks every plan is runnable; at
// the end no block is leaked, the engine holds no sequence, every request got
// exactly one final event, and none exceeded its limits. Run again with
// prefix caching, prompts built on a few shared prefixes under two adapters:
// the FakeEngine's fake KV cache proves every cached block reused holds the
// very prefix of the sequence that takes it.

#include <map>
#include <tuple>
#include <random>
#include <vector>

#include "batching/fake_engine.h"
#include "batching/scheduler.h"
#include "gtest/gtest.h"

namespace fms {
namespace {

constexpr int32_t kEos = 2;

struct Tracker {
  Request request;
  int tokens = 0;
  int finals = 0;
  FinishReason reason = FinishReason::kNotFinished;
};

// Parameters: prefix caching, holding a burst's first tokens.
class SchedulerProperty : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(SchedulerProperty, TenThousandRandomRequests) {
  const auto [caching, hold] = GetParam();
  std::mt19937_64 rng(20261129);
  auto uniform = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  const SchedulerConfig config{.max_batch_size = 16, .max_tokens_per_step = 48,
                               .max_waiting_tokens = 6, .num_blocks = 40,
                               .block_size = 4, .enable_prefix_caching = caching,
                               .hold_burst_first_tokens = hold,
                               .eos_token_ids = {kEos}};
  std::vector<std::vector<int32_t>> prefixes(5);
  for (auto& prefix : prefixes) {
    for (int i = uniform(0, 24); i > 0; --i) prefix.push_back(uniform(3, 999));
  }
  Scheduler scheduler(config);
  FakeEngine engine({.num_blocks = 40, .block_size = 4, .vocab_size = 1000});
  std::map<SequenceId, Tracker> requests;
  const Clock::time_point t0;
  int64_t step = 0, next_id = 0, failures = 0;
  auto now = [&] { return t0 + std::chrono::milliseconds(step); };
  auto record = [&](const std::vector<SequenceEvent>& events) {
    for (const SequenceEvent& e : events) {
      Tracker& r = requests.at(e.id);
      ASSERT_EQ(r.finals, 0) << "event after the final event, id " << e.id;
      r.tokens += e.has_token;
      ASSERT_EQ(e.generated, static_cast<uint32_t>(r.tokens));
      if (e.finish != FinishReason::kNotFinished) {
        ++r.finals;
        r.reason = e.finish;
      }
    }
  };
  while (next_id < 10000 || scheduler.HasWork()) {
    for (int n = uniform(0, 3); n > 0 && next_id < 10000; --n) {  // Arrivals.
      Request request{.id = next_id++, .arrival = now()};
      if (caching) {
        request.prompt = prefixes[uniform(0, 4)];
        request.adapter = uniform(0, 3) == 0 ? "x" : "";
      }
      for (int i = uniform(1, caching ? 16 : 40); i > 0; --i) {
        request.prompt.push_back(uniform(3, 999));
      }
      request.stopping.max_new_tokens = uniform(1, 30);
      request.stopping.min_new_tokens =
          std::min<uint32_t>(uniform(0, 3), request.stopping.max_new_tokens);
      if (uniform(0, 9) == 0) request.stopping.deadline = now() + std::chrono::milliseconds(uniform(1, 40));
      if (uniform(0, 4) == 0) engine.Script(request.id, uniform(0, 20), kEos);
      requests[request.id].request = request;
      ASSERT_TRUE(scheduler.Add(request).ok());
    }
    if (next_id > 0 && uniform(0, 2) == 0) {  // Cancellations and stop sequences.
      scheduler.Finish(uniform(0, next_id - 1),
                       uniform(0, 1) ? FinishReason::kCancelled : FinishReason::kStopSequence);
    }
    std::vector<SequenceEvent> events;
    const StepPlan plan = scheduler.Schedule(now(), &events);
    record(events);
    ASSERT_LE(static_cast<int64_t>(plan.chunks.size()), config.max_batch_size);
    int64_t tokens = 0;
    for (const ScheduledChunk& c : plan.chunks) tokens += c.token_ids.size();
    ASSERT_LE(tokens, config.max_tokens_per_step);
    if (uniform(0, 499) == 0) engine.FailStep(plan.step, absl::InternalError("injected"));
    auto result = engine.Step(plan);
    failures += !result.ok();
    record(result.ok() ? scheduler.Update(*result, now()) : scheduler.Fail(result.status()));
    ++step;
    ASSERT_LT(step, 1'000'000) << "no progress";
  }
  // One more plan hands the last `finished` ids to the engine.
  std::vector<SequenceEvent> events;
  engine.Step(scheduler.Schedule(now(), &events)).IgnoreError();
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(scheduler.stats().free_blocks, config.num_blocks);
  EXPECT_EQ(engine.live_sequences(), 0u);
  std::map<FinishReason, int> reasons;
  for (const auto& [id, r] : requests) {
    ASSERT_EQ(r.finals, 1) << "id " << id;
    ASSERT_LE(r.tokens, static_cast<int>(r.request.stopping.max_new_tokens)) << id;
    if (r.reason == FinishReason::kMaxTokens) {
      ASSERT_EQ(r.tokens, static_cast<int>(r.request.stopping.max_new_tokens)) << id;
    }
    if (r.reason == FinishReason::kEosToken) {
      ASSERT_GE(r.tokens, static_cast<int>(r.request.stopping.min_new_tokens)) << id;
    }
    ++reasons[r.reason];
  }
  // Every path was exercised.
  EXPECT_GT(scheduler.stats().preemptions, 100);
  if (caching) {
    const SchedulerStats stats = scheduler.stats();
    EXPECT_GT(stats.prefix_hits, stats.prefix_queries / 10);
    EXPECT_GT(stats.cached_blocks, 0);
  }
  EXPECT_GT(failures, 0);
  for (FinishReason reason : {FinishReason::kMaxTokens, FinishReason::kEosToken,
                              FinishReason::kCancelled, FinishReason::kStopSequence,
                              FinishReason::kTimeLimit, FinishReason::kError}) {
    EXPECT_GT(reasons[reason], 0) << static_cast<int>(reason);
  }
}

INSTANTIATE_TEST_SUITE_P(CachingAndBursts, SchedulerProperty,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

}  // namespace
}  // namespace fms
