#include "batching/batcher.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "batching/fake_engine.h"
#include "gtest/gtest.h"

namespace fms {
namespace {

constexpr int32_t kEos = 2;
const EngineInfo kInfo{.num_blocks = 64, .block_size = 4, .vocab_size = 1000,
                       .eos_token_ids = {kEos}};
const SchedulerConfig kConfig{.max_batch_size = 8, .max_tokens_per_step = 64,
                              .num_blocks = 64, .block_size = 4,
                              .eos_token_ids = {kEos}};

// Collects one request's events; Wait() returns after the final one.
class Collector {
 public:
  EventSink Sink() {
    return [this](const SequenceEvent& e) {
      absl::MutexLock lock(&mu_);
      events_.push_back(e);
      if (e.finish != FinishReason::kNotFinished) done_.Notify();
    };
  }
  std::vector<SequenceEvent> Wait() {
    done_.WaitForNotification();
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<SequenceEvent> events_;
  absl::Notification done_;
};

Request MakeRequest(int32_t first_token, uint32_t max_new_tokens) {
  Request request{.prompt = {first_token}, .arrival = Clock::now()};
  request.stopping.max_new_tokens = max_new_tokens;
  return request;
}

TEST(Batcher, StreamsTokensInOrderAndEndsOnce) {
  FakeEngine engine(kInfo);
  Batcher batcher(&engine, kConfig);
  Collector collector;
  ASSERT_TRUE(batcher.Submit(MakeRequest(100, 5), collector.Sink()).ok());
  const auto events = collector.Wait();
  ASSERT_EQ(events.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(events[i].token, 101 + i);
    EXPECT_EQ(events[i].generated, static_cast<uint32_t>(i + 1));
  }
  EXPECT_EQ(events.back().finish, FinishReason::kMaxTokens);
}

// An engine whose steps wait until released: Submit must not wait for it.
class BlockedEngine : public FakeEngine {
 public:
  using FakeEngine::FakeEngine;
  absl::StatusOr<StepResult> Step(const StepPlan& plan) override {
    if (!entered_.HasBeenNotified()) entered_.Notify();
    release_.WaitForNotification();
    return FakeEngine::Step(plan);
  }
  absl::Notification entered_, release_;
};

TEST(Batcher, ConcurrentSubmitsAndCancels) {
  // The model waits until every submit and cancel is in: a cancel that came
  // after its request had finished would not be a cancel.
  BlockedEngine engine(kInfo);
  Batcher batcher(&engine, kConfig);
  constexpr int kThreads = 8, kPerThread = 25;
  std::vector<Collector> collectors(kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int k = t * kPerThread + i;
        auto id = batcher.Submit(MakeRequest(100 + k, 200), collectors[k].Sink());
        ASSERT_TRUE(id.ok());
        if (k % 2 == 0) batcher.Cancel(*id);  // Half go away at once.
      }
    });
  }
  for (auto& thread : threads) thread.join();
  engine.release_.Notify();
  int cancelled = 0, finished = 0;
  for (int k = 0; k < kThreads * kPerThread; ++k) {
    const auto events = collectors[k].Wait();
    int finals = 0;
    for (const auto& e : events) finals += e.finish != FinishReason::kNotFinished;
    EXPECT_EQ(finals, 1);
    EXPECT_EQ(events.back().finish == FinishReason::kCancelled, k % 2 == 0)
        << "request " << k << " ended with " << static_cast<int>(events.back().finish)
        << " after " << events.size() << " events: " << events.back().error;
    cancelled += events.back().finish == FinishReason::kCancelled;
    finished += events.back().finish != FinishReason::kCancelled;
  }
  EXPECT_EQ(cancelled, kThreads * kPerThread / 2);
  EXPECT_EQ(finished, kThreads * kPerThread / 2);
}

TEST(Batcher, SubmitAndCancelNeverWaitForTheModel) {
  BlockedEngine engine(kInfo);
  Batcher batcher(&engine, kConfig);
  Collector first, second;
  ASSERT_TRUE(batcher.Submit(MakeRequest(100, 3), first.Sink()).ok());
  engine.entered_.WaitForNotification();  // The loop is inside Step now.
  auto id = batcher.Submit(MakeRequest(200, 3), second.Sink());  // Returns.
  ASSERT_TRUE(id.ok());
  batcher.Cancel(*id);
  engine.release_.Notify();
  EXPECT_EQ(first.Wait().back().finish, FinishReason::kMaxTokens);
  EXPECT_EQ(second.Wait().back().finish, FinishReason::kCancelled);
}

TEST(Batcher, FailedStepFailsItsRequestsAndTheQueueContinues) {
  FakeEngine engine(kInfo);
  engine.FailStep(1, absl::InternalError("worker 0 exited"));
  Batcher batcher(&engine, kConfig);
  Collector failed;
  ASSERT_TRUE(batcher.Submit(MakeRequest(100, 3), failed.Sink()).ok());
  const auto events = failed.Wait();
  EXPECT_EQ(events.back().finish, FinishReason::kError);
  EXPECT_EQ(events.back().error.message(), "worker 0 exited");
  Collector next;
  ASSERT_TRUE(batcher.Submit(MakeRequest(100, 3), next.Sink()).ok());
  EXPECT_EQ(next.Wait().back().finish, FinishReason::kMaxTokens);
}

TEST(Batcher, OversizedRequestGetsAnErrorEvent) {
  FakeEngine engine(kInfo);
  Batcher batcher(&engine, kConfig);
  Collector collector;
  ASSERT_TRUE(batcher.Submit(MakeRequest(100, 1000), collector.Sink()).ok());
  const auto events = collector.Wait();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].error.code(), absl::StatusCode::kResourceExhausted);
}

TEST(Batcher, ShutdownEndsOpenRequests) {
  BlockedEngine engine(kInfo);
  auto batcher = std::make_unique<Batcher>(&engine, kConfig);
  Collector collector;
  ASSERT_TRUE(batcher->Submit(MakeRequest(100, 100), collector.Sink()).ok());
  engine.entered_.WaitForNotification();
  std::thread stopper([&] { batcher->Shutdown(); });
  // Once Submit is refused the batcher is stopping: let the model go on.
  std::atomic<int> late_errors{0};
  int late = 0;
  while (batcher->Submit(MakeRequest(1, 1), [&](const SequenceEvent& e) {
                  late_errors += e.error.code() == absl::StatusCode::kUnavailable;
                }).ok()) {
    ++late;
  }
  engine.release_.Notify();
  stopper.join();
  const auto events = collector.Wait();
  EXPECT_EQ(events.back().error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(late_errors.load(), late);  // Accepted ones end too.
}

TEST(Batcher, ResetFailsOpenRequestsAndStartsClean) {
  BlockedEngine engine(kInfo);
  Batcher batcher(&engine, kConfig);
  Collector running, waiting;
  ASSERT_TRUE(batcher.Submit(MakeRequest(100, 50), running.Sink()).ok());
  engine.entered_.WaitForNotification();
  ASSERT_TRUE(batcher.Submit(MakeRequest(200, 50), waiting.Sink()).ok());
  batcher.Reset(absl::UnavailableError("workers restarted"));
  engine.release_.Notify();
  EXPECT_EQ(running.Wait().back().error.message(), "workers restarted");
  EXPECT_EQ(waiting.Wait().back().error.message(), "workers restarted");
  engine.Forget();  // The restarted workers know nothing.
  Collector after;  // The scheduler starts empty and works again.
  ASSERT_TRUE(batcher.Submit(MakeRequest(300, 3), after.Sink()).ok());
  EXPECT_EQ(after.Wait().back().finish, FinishReason::kMaxTokens);
}

struct CountingMetrics : BatcherMetrics {
  void OnStep(const StepStats& s) override {
    steps++;
    tokens += s.tokens;
  }
  void OnAdmitted(double seconds) override {
    admitted++;
    EXPECT_GE(seconds, 0.0);
  }
  std::atomic<int> steps{0}, tokens{0}, admitted{0};
};

TEST(Batcher, MetricsHooksSeeEveryStep) {
  FakeEngine engine(kInfo);
  CountingMetrics metrics;
  {
    Batcher batcher(&engine, kConfig, &metrics);
    Collector collector;
    ASSERT_TRUE(batcher.Submit(MakeRequest(100, 4), collector.Sink()).ok());
    const std::vector<SequenceEvent> events = collector.Wait();
    // Only the first event says when the request joined the batch.
    ASSERT_FALSE(events.empty());
    EXPECT_TRUE(events.front().admitted.has_value());
    for (size_t i = 1; i < events.size(); ++i) EXPECT_FALSE(events[i].admitted.has_value());
  }
  EXPECT_EQ(metrics.admitted.load(), 1);
  EXPECT_EQ(metrics.steps.load(), 4);
  EXPECT_EQ(metrics.tokens.load(), 4);  // 1 prompt token + 3 decodes
}

TEST(Batcher, InternalRequestsStayOutOfTheRequestMetrics) {
  FakeEngine engine(kInfo);
  CountingMetrics metrics;
  {
    Batcher batcher(&engine, kConfig, &metrics);
    Collector collector;
    Request warm_up = MakeRequest(100, 2);
    warm_up.internal = true;  // The server's start-up warm-up.
    ASSERT_TRUE(batcher.Submit(warm_up, collector.Sink()).ok());
    collector.Wait();
  }
  EXPECT_EQ(metrics.admitted.load(), 0);
  EXPECT_EQ(metrics.steps.load(), 2);  // Engine steps still count.
}

// Records the last published QueueState.
struct StateMetrics : BatcherMetrics {
  void OnState(const QueueState& s) override {
    absl::MutexLock lock(&mu);
    last = s;
  }
  // Polls for up to 10 s until `pred(last)` holds; returns whether it did.
  bool Await(bool (*pred)(const QueueState&)) {
    for (int i = 0; i < 1000; ++i) {
      {
        absl::MutexLock lock(&mu);
        if (pred(last)) return true;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }
  absl::Mutex mu;
  QueueState last ABSL_GUARDED_BY(mu);
};

// A model that takes 5 ms a step, so that a request is still running when the
// test ends it.
class PacedEngine : public FakeEngine {
 public:
  using FakeEngine::FakeEngine;
  absl::StatusOr<StepResult> Step(const StepPlan& plan) override {
    absl::SleepFor(absl::Milliseconds(5));
    return FakeEngine::Step(plan);
  }
};

TEST(Batcher, PublishesFreedBlocksWhenNoStepFollows) {
  PacedEngine engine(kInfo);
  StateMetrics metrics;
  Batcher batcher(&engine, kConfig, &metrics);
  Collector collector;
  auto id = batcher.Submit(MakeRequest(100, 200), collector.Sink());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(metrics.Await(+[](const QueueState& s) { return s.running == 1; }));
  // As the front end does on a stop sequence; what follows is a step that only
  // releases the sequence, with no chunk to run.
  batcher.Finish(*id, FinishReason::kStopSequence);
  EXPECT_EQ(collector.Wait().back().finish, FinishReason::kStopSequence);
  EXPECT_TRUE(metrics.Await(+[](const QueueState& s) {
    return s.running == 0 && s.waiting == 0 && s.free_blocks == kInfo.num_blocks;
  }));
}

}  // namespace
}  // namespace fms
