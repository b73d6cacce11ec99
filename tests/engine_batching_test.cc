// The scheduler with the real model (LlamaEngine on a tiny test checkpoint):
// 32 requests arriving at random steps, with different lengths, greedy and
// seeded sampling, through a KV pool small enough to force preemptions,
// produce exactly the tokens each produces alone.
//
// The checkpoints come from tools/make_test_models.py; tools/test generates
// them and sets FMS_TEST_MODELS.

#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <vector>

#include "batching/scheduler.h"
#include "gtest/gtest.h"
#include "model/llama_engine.h"
#include "model/torch_threads.h"

namespace fms {
namespace {

std::string ModelDir(const char* variant) {
  const char* root = std::getenv("FMS_TEST_MODELS");
  return root == nullptr ? "" : (std::filesystem::path(root) / variant).string();
}

std::unique_ptr<LlamaEngine> MakeEngine(const std::string& dir, int64_t num_blocks) {
  auto model = LlamaModel::Load(dir, {});
  EXPECT_TRUE(model.ok()) << model.status();
  return std::make_unique<LlamaEngine>(*std::move(model),
                                       KvCacheOptions{.num_blocks = num_blocks, .block_size = 4});
}

// Runs `requests` (added at their arrival step) to completion; returns the
// tokens of each. Also returns the number of preemptions.
std::map<SequenceId, std::vector<int32_t>> RunToCompletion(
    Engine& engine, const std::multimap<int, Request>& arrivals, int64_t max_batch,
    int64_t* preemptions) {
  const EngineInfo info = engine.Info();
  Scheduler scheduler({.max_batch_size = max_batch, .max_tokens_per_step = 24,
                       .max_waiting_tokens = 4, .num_blocks = info.num_blocks,
                       .block_size = info.block_size, .eos_token_ids = info.eos_token_ids});
  std::map<SequenceId, std::vector<int32_t>> tokens;
  auto next = arrivals.begin();
  for (int step = 0; next != arrivals.end() || scheduler.HasWork(); ++step) {
    for (; next != arrivals.end() && next->first <= step; ++next) {
      EXPECT_TRUE(scheduler.Add(next->second).ok());
    }
    std::vector<SequenceEvent> events;
    const StepPlan plan = scheduler.Schedule(Clock::now(), &events);
    auto result = engine.Step(plan);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) break;
    for (const SequenceEvent& e : scheduler.Update(*result, Clock::now())) {
      if (e.has_token) tokens[e.id].push_back(e.token);
    }
  }
  if (preemptions != nullptr) *preemptions = scheduler.stats().preemptions;
  return tokens;
}

TEST(EngineBatching, ThirtyTwoRandomArrivalsMatchEachRequestAlone) {
  const std::string dir = ModelDir("gqa2");
  if (dir.empty()) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
  ConfigureTorchThreads({.intra_op_threads = 2});
  std::mt19937 rng(7);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::multimap<int, Request> arrivals;
  for (SequenceId id = 0; id < 32; ++id) {
    Request request{.id = id};
    request.prompt.push_back(1);
    for (int i = uniform(1, 40); i > 0; --i) request.prompt.push_back(uniform(3, 511));
    request.stopping.max_new_tokens = uniform(4, 24);
    if (id % 2 == 1) {
      request.sampling = {.sample = true, .temperature = 0.8f, .top_k = uniform(0, 50),
                          .top_p = 0.95f, .seed = static_cast<uint64_t>(1000 + id)};
    }
    arrivals.emplace(uniform(0, 30), request);
  }
  // Batched: up to 8 at once through 40 blocks of 4 (160 positions).
  int64_t preemptions = 0;
  auto engine = MakeEngine(dir, 40);
  const auto batched = RunToCompletion(*engine, arrivals, 8, &preemptions);
  EXPECT_GT(preemptions, 0) << "the pool should force preemptions";
  ASSERT_EQ(batched.size(), 32u);
  // Alone: one request at a time through a fresh engine.
  for (const auto& [step, request] : arrivals) {
    auto alone_engine = MakeEngine(dir, 64);
    const auto alone = RunToCompletion(*alone_engine, {{0, request}}, 1, nullptr);
    EXPECT_EQ(batched.at(request.id), alone.at(request.id))
        << "request " << request.id << (request.sampling.sample ? " (sampled)" : " (greedy)");
  }
}

TEST(EngineBatching, PromptDetailsCoverEveryPromptTokenAcrossChunks) {
  const std::string dir = ModelDir("mha");
  if (dir.empty()) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
  auto engine = MakeEngine(dir, 64);
  Request request{.id = 1, .prompt = {1}, .prompt_details = true};
  for (int i = 0; i < 50; ++i) request.prompt.push_back(3 + 7 * i);  // 51 tokens, 3 chunks
  request.sampling = {.logprobs = true, .ranks = true, .top_n = 2};
  request.stopping.max_new_tokens = 1;
  Scheduler scheduler({.max_tokens_per_step = 24, .num_blocks = 64, .block_size = 4});
  ASSERT_TRUE(scheduler.Add(request).ok());
  std::vector<TokenDetails> details;
  while (scheduler.HasWork()) {
    std::vector<SequenceEvent> events;
    auto result = engine->Step(scheduler.Schedule(Clock::now(), &events));
    ASSERT_TRUE(result.ok());
    for (const SequenceEvent& e : scheduler.Update(*result, Clock::now())) {
      details.insert(details.end(), e.prompt_details.begin(), e.prompt_details.end());
    }
  }
  ASSERT_EQ(details.size(), request.prompt.size());
  EXPECT_TRUE(std::isnan(details[0].logprob));
  EXPECT_EQ(details[0].rank, 0u);
  for (size_t i = 1; i < details.size(); ++i) {
    EXPECT_LT(details[i].logprob, 0.0f) << i;
    EXPECT_GE(details[i].rank, 1u) << i;
    EXPECT_GE(details[i].top.size(), 2u) << i;
    // Rank 1 means the token was the best candidate: it leads the top list.
    if (details[i].rank == 1) {
      EXPECT_EQ(details[i].top[0].first, request.prompt[i]);
    }
  }
}

// A plan that contradicts what the worker holds (a corrupt message, a
// scheduler bug) is refused with INVALID_ARGUMENT and changes nothing: the
// worker serves on, and its sequences produce the tokens they would have.
TEST(EngineBatching, ACorruptPlanIsRefusedAndTheWorkerServesOn) {
  const std::string dir = ModelDir("mha");
  if (dir.empty()) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
  const auto run = [&](bool with_corrupt_plans) {
    auto engine = MakeEngine(dir, 8);
    const int64_t vocab = engine->Info().vocab_size;
    StepPlan prefill{.step = 0,
                     .new_sequences = {{.id = 1, .prompt = {1, 5, 9}}},
                     .chunks = {{.id = 1, .token_ids = {1, 5, 9}, .new_blocks = {0}}}};
    std::vector<int32_t> tokens = {engine->Step(prefill)->outputs.at(0).token};
    const std::vector<StepPlan> corrupt = {
        {.chunks = {{.id = 42, .token_ids = {1, 2}, .new_blocks = {1}}}},
        {.chunks = {{.id = 1, .token_ids = {static_cast<int32_t>(vocab)}, .context_len = 3}}},
        {.chunks = {{.id = 1, .token_ids = {-5}, .context_len = 3}}},
        {.chunks = {{.id = 1, .token_ids = {3}, .context_len = 3, .new_blocks = {99}}}},
        {.chunks = {{.id = 1, .token_ids = {3}, .context_len = 0}}},
        {.new_sequences = {{.id = 2, .prompt = {1}}},
         .chunks = {{.id = 2, .token_ids = {1}, .new_blocks = {0}}}},  // Block 0 is taken.
    };
    for (const StepPlan& plan : with_corrupt_plans ? corrupt : std::vector<StepPlan>{}) {
      const auto result = engine->Step(plan);
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    }
    for (int64_t context = 3; context < 8; ++context) {
      StepPlan decode{.chunks = {{.id = 1, .token_ids = {tokens.back()}, .context_len = context,
                                  .new_blocks = context == 4 ? std::vector<int32_t>{1}
                                                             : std::vector<int32_t>{}}}};
      auto result = engine->Step(decode);
      EXPECT_TRUE(result.ok()) << result.status();
      if (!result.ok()) break;
      tokens.push_back(result->outputs.at(0).token);
    }
    return tokens;
  };
  const std::vector<int32_t> tokens = run(true);
  EXPECT_EQ(tokens.size(), 6u);
  EXPECT_EQ(tokens, run(false));
}

}  // namespace
}  // namespace fms
