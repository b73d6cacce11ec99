// The worker processes: fms-worker started by WorkerGroup, driven through
// RemoteEngine over a Unix socket, gives the same tokens as the in-process
// engine; a worker killed mid-run fails the step naming its rank, and no
// process is left behind. Uses the checkpoints of tools/make_test_models.py
// (FMS_TEST_MODELS, set by tools/test).

#include <signal.h>
#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>

#include "batching/scheduler.h"
#include "gtest/gtest.h"
#include "model/llama_engine.h"
#include "sharding/remote_engine.h"
#include "sharding/worker_group.h"

namespace fms {
namespace {

// The worker sizes its pool from KV_CACHE_MEMORY's bytes: gqa2 (2 layers, 2
// kv heads of 16, fp32) holds keys and values of a 4-position block in 1 KiB.
constexpr int64_t kBlocks = 40;
constexpr int64_t kBlockBytes = 2 * 2 * 2 * 16 * 4 * 4;

std::string Model(const char* variant) {
  const char* root = std::getenv("FMS_TEST_MODELS");
  return root == nullptr ? "" : (std::filesystem::path(root) / variant).string();
}

// A short directory: Unix socket paths are limited to 107 bytes, and Bazel's
// TEST_TMPDIR is longer than that.
class ShortTempDir {
 public:
  ShortTempDir() {
    char pattern[] = "/tmp/fms-workers-XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~ShortTempDir() { std::filesystem::remove_all(path_); }
  operator std::string() const { return path_; }  // NOLINT: test helper

 private:
  std::string path_;
};

std::unique_ptr<WorkerGroup> StartGroup(const std::string& model, const std::string& dir) {
  auto binary = FindWorkerBinary();
  EXPECT_TRUE(binary.ok()) << binary.status();
  auto group = WorkerGroup::Start({.worker_binary = *binary, .model = model, .num_shard = 1,
                                   .socket_dir = dir, .max_sequence_length = 40,
                                   .kv_budget_bytes = kBlocks * kBlockBytes, .block_size = 4});
  EXPECT_TRUE(group.ok()) << group.status();
  return group.ok() ? *std::move(group) : nullptr;
}

// A ready one-worker group and the engine over it; a null engine on failure.
std::pair<std::unique_ptr<WorkerGroup>, std::unique_ptr<RemoteEngine>> StartConnected(
    const std::string& model, const std::string& dir) {
  auto group = StartGroup(model, dir);
  if (group == nullptr || !group->WaitReady(absl::Seconds(60)).ok()) return {};
  auto remote = RemoteEngine::Connect(group->sockets());
  EXPECT_TRUE(remote.ok()) << remote.status();
  if (!remote.ok()) return {std::move(group), nullptr};
  return {std::move(group), *std::move(remote)};
}

bool Alive(pid_t pid) { return kill(pid, 0) == 0 || errno != ESRCH; }

// Runs 12 requests with random lengths and sampling through `engine`.
std::map<SequenceId, std::vector<int32_t>> RunRequests(Engine& engine) {
  const EngineInfo info = engine.Info();
  Scheduler scheduler({.max_batch_size = 6, .max_tokens_per_step = 24,
                       .num_blocks = info.num_blocks, .block_size = info.block_size,
                       .eos_token_ids = info.eos_token_ids});
  std::mt19937 rng(11);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (SequenceId id = 0; id < 12; ++id) {
    Request request{.id = id, .prompt = {1}};
    for (int i = uniform(1, 30); i > 0; --i) request.prompt.push_back(uniform(3, 511));
    request.stopping.max_new_tokens = uniform(3, 16);
    if (id % 2) request.sampling = {.sample = true, .seed = static_cast<uint64_t>(id)};
    EXPECT_TRUE(scheduler.Add(request).ok());
  }
  std::map<SequenceId, std::vector<int32_t>> tokens;
  while (scheduler.HasWork()) {
    std::vector<SequenceEvent> events;
    auto result = engine.Step(scheduler.Schedule(Clock::now(), &events));
    if (!result.ok()) {
      ADD_FAILURE() << result.status();
      break;
    }
    for (const SequenceEvent& e : scheduler.Update(*result, Clock::now())) {
      if (e.has_token) tokens[e.id].push_back(e.token);
    }
  }
  return tokens;
}

TEST(Workers, OneWorkerProcessGivesTheInProcessTokens) {
  const std::string model = Model("gqa2");
  if (model.empty()) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
  const ShortTempDir dir;
  auto [group, remote] = StartConnected(model, dir);
  ASSERT_NE(remote, nullptr);
  EXPECT_EQ(remote->Info().num_blocks, kBlocks);
  auto local_model = LlamaModel::Load(model, {});
  ASSERT_TRUE(local_model.ok());
  LlamaEngine local(*std::move(local_model), {.num_blocks = kBlocks, .block_size = 4});
  EXPECT_EQ(RunRequests(*remote), RunRequests(local));
}

TEST(Workers, KilledWorkerFailsTheStepNamingItsRankAndLeavesNoProcess) {
  const std::string model = Model("gqa2");
  if (model.empty()) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
  const ShortTempDir dir;
  auto [group, remote] = StartConnected(model, dir);
  ASSERT_NE(remote, nullptr);
  const pid_t pid = group->pids()[0];
  kill(pid, SIGKILL);
  StepPlan plan{.step = 1};
  plan.new_sequences.push_back({.id = 1, .prompt = {1, 5}});
  plan.chunks.push_back({.id = 1, .token_ids = {1, 5}, .new_blocks = {0}});
  auto result = remote->Step(plan);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("rank 0"), std::string::npos) << result.status();
  std::optional<std::string> exited;
  for (int i = 0; i < 100 && !exited; ++i) {
    exited = group->Exited();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(exited.has_value());
  EXPECT_NE(exited->find("rank 0 exited with signal 9"), std::string::npos) << *exited;
  group.reset();
  EXPECT_FALSE(Alive(pid));
}

TEST(Workers, BadModelPathStopsStartupNamingTheFile) {
  const ShortTempDir dir;
  auto group = StartGroup("/nonexistent/model", dir);
  ASSERT_NE(group, nullptr);
  const absl::Status status = group->WaitReady(absl::Seconds(60));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("rank 0 exited with exit code 1"), std::string::npos) << status;
  EXPECT_NE(status.message().find("/nonexistent/model/config.json"), std::string::npos) << status;
}

TEST(Workers, OverlongSocketPathIsRefusedClearly) {
  auto group = WorkerGroup::Start({.worker_binary = "/bin/true", .model = "m",
                                   .socket_dir = "/tmp/" + std::string(120, 'x')});
  EXPECT_EQ(group.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Workers, DestroyingTheGroupStopsEveryWorker) {
  const std::string model = Model("mha");
  if (model.empty()) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
  const ShortTempDir dir;
  auto group = StartGroup(model, dir);
  ASSERT_TRUE(group->WaitReady(absl::Seconds(60)).ok());
  const pid_t pid = group->pids()[0];
  EXPECT_TRUE(Alive(pid));
  group.reset();  // SIGTERM: the worker exits by itself.
  EXPECT_FALSE(Alive(pid));
}

}  // namespace
}  // namespace fms
