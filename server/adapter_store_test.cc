// The store's own logic: id validation, folder resolution, one load for
// concurrent first requests, the LRU and leases. The engine here is a
// recording stand-in: the workers' side of LoadAdapter is tested end to end
// through fms-server (tests/adapters_test.py).

#include "server/adapter_store.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace fms {
namespace {

namespace fs = std::filesystem;

class RecordingEngine : public Engine {
 public:
  EngineInfo Info() const override { return {}; }
  absl::StatusOr<StepResult> Step(const StepPlan&) override { return StepResult{}; }
  absl::StatusOr<AdapterInfo> LoadAdapter(const std::string& id,
                                          const std::string& dir) override {
    absl::SleepFor(absl::Milliseconds(20));  // Long enough for callers to pile up.
    absl::MutexLock lock(&mu);
    ++loads;
    loaded.insert(id);
    if (fs::exists(fs::path(dir) / "refuse")) {
      loaded.erase(id);
      return absl::InvalidArgumentError("tensor x has shape [2], expected [3]");
    }
    if (fs::exists(fs::path(dir) / "down")) {
      loaded.erase(id);
      return absl::UnavailableError("rank 1: Socket closed");
    }
    return AdapterInfo{.peft_type = "LORA", .rank = 8, .bytes = 1 << 20};
  }
  void UnloadAdapter(const std::string& id) override {
    absl::MutexLock lock(&mu);
    loaded.erase(id);
  }
  absl::Mutex mu;
  int loads = 0;
  std::set<std::string> loaded;
};

class AdapterStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / "adapter-store-test";
    fs::remove_all(root_);
    for (const char* id : {"a", "b", "c", "team/d", "bad"}) Make(id, 8);
    Make("wide", 128);
    std::ofstream(root_ / "bad" / "refuse") << "";
    fs::create_directories(root_ / "empty");
    fs::create_directories(root_.parent_path() / "outside");
    fs::create_symlink(root_.parent_path() / "outside", root_ / "escape");
  }
  void Make(const std::string& id, int rank) {
    fs::create_directories(root_ / id);
    std::ofstream(root_ / id / "adapter_config.json")
        << R"({"peft_type": "LORA", "r": )" << rank << "}";
  }
  AdapterStore Store(uint32_t max_loaded = 8) {
    return AdapterStore({.root = root_.string(), .max_loaded = max_loaded}, &engine_);
  }
  std::string Error(AdapterStore& store, const std::string& id) {
    auto lease = store.Acquire(id);
    EXPECT_FALSE(lease.ok()) << id;
    EXPECT_EQ(lease.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(lease.status().message());
  }
  fs::path root_;
  RecordingEngine engine_;
};

TEST_F(AdapterStoreTest, RefusesWithTheAdaptersMessages) {
  AdapterStore store = Store();
  EXPECT_EQ(Error(store, "../a"),
            "Invalid adapter id '../a', must contain only alphanumeric, _ and - and /");
  EXPECT_EQ(Error(store, "/etc"),
            "Invalid adapter id '/etc', must contain only alphanumeric, _ and - and /");
  EXPECT_EQ(Error(store, "escape"),  // A symlink out of the store.
            "Invalid adapter id 'escape', must contain only alphanumeric, _ and - and /");
  EXPECT_EQ(Error(store, "nope"), "can't retrieve adapter with id 'nope': directory does not exist");
  EXPECT_EQ(Error(store, "empty"),
            "can't retrieve adapter with id 'empty': invalid adapter: no adapter_config.json found");
  EXPECT_EQ(Error(store, "wide"),
            "can't retrieve adapter with id 'wide': LoRA rank 128 is greater than MAX_LORA_RANK 64");
  EXPECT_EQ(Error(store, "bad"),
            "can't retrieve adapter with id 'bad': tensor x has shape [2], expected [3]");
  std::ofstream(root_ / "b" / "down") << "";  // A worker that is restarting.
  auto down = store.Acquire("b");
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(down.status().message(), "can't retrieve adapter with id 'b': rank 1: Socket closed");
  std::ofstream(root_ / "c" / "adapter_config.json") << R"({"peft_type": "IA3"})";
  EXPECT_EQ(Error(store, "c"), "adapter type IA3 is not currently supported");
  AdapterStore none({}, &engine_);
  EXPECT_EQ(Error(none, "a"), "adapter_id supplied but no adapter store was configured");
  EXPECT_EQ(store.loaded(), 0);
  EXPECT_TRUE(engine_.loaded.empty());  // The refused load was not left behind.
}

TEST_F(AdapterStoreTest, ConcurrentFirstRequestsLoadOnce) {
  AdapterStore store = Store();
  std::vector<std::thread> threads;
  std::vector<std::string> ids(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto lease = store.Acquire("team/d");
      ASSERT_TRUE(lease.ok()) << lease.status();
      ids[i] = (*lease)->engine_id();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(engine_.loads, 1);
  for (const std::string& id : ids) EXPECT_EQ(id, ids[0]);
}

TEST_F(AdapterStoreTest, EvictsTheLeastRecentlyUsedUnleasedLoad) {
  AdapterStore store = Store(/*max_loaded=*/2);
  auto a = store.Acquire("a");
  ASSERT_TRUE(a.ok());
  const std::string a_id = (*a)->engine_id();
  { ASSERT_TRUE(store.Acquire("b").ok()); }
  { ASSERT_TRUE(store.Acquire("c").ok()); }  // Over by one: b goes, a is leased.
  EXPECT_EQ(store.loaded(), 2);
  EXPECT_EQ(engine_.loaded.count(a_id), 1u);
  a->reset();  // The request holding a finished.
  { ASSERT_TRUE(store.Acquire("team/d").ok()); }  // Now a, the oldest unleased, goes.
  EXPECT_EQ(engine_.loaded.count(a_id), 0u);
  EXPECT_EQ(store.loaded(), 2);
  EXPECT_EQ(engine_.loaded.size(), 2u);
}

TEST_F(AdapterStoreTest, BoundsTheBytesLoaded) {
  // 1 MiB each (RecordingEngine): 2.5 MiB hold two.
  AdapterStore store({.root = root_.string(), .max_loaded = 8, .max_bytes = 5 << 19},
                     &engine_);
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(store.Acquire(id).ok()) << id;
  EXPECT_EQ(store.loaded(), 2);
  EXPECT_EQ(engine_.loaded.size(), 2u);
  EXPECT_EQ(engine_.loaded.count("a@1"), 0u);  // The least recently used went.
}

TEST_F(AdapterStoreTest, ReloadsAfterTheWorkersRestart) {
  AdapterStore store = Store();
  auto first = store.Acquire("a");
  ASSERT_TRUE(first.ok());
  store.Forget();
  auto second = store.Acquire("a");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(engine_.loads, 2);
  EXPECT_NE((*first)->engine_id(), (*second)->engine_id());
}

}  // namespace
}  // namespace fms
