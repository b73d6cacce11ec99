#include "sharding/cpu_budget.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace fms {
namespace {

TEST(CoresFromCpuMax, RoundsTheQuotaUpAndIgnoresNoLimit) {
  EXPECT_EQ(CoresFromCpuMax("800000 100000\n"), 8);
  EXPECT_EQ(CoresFromCpuMax("150000 100000"), 2);  // limits.cpu: 1500m
  EXPECT_EQ(CoresFromCpuMax("50000 100000"), 1);   // 500m still gets a thread.
  EXPECT_EQ(CoresFromCpuMax("max 100000\n"), std::nullopt);
  EXPECT_EQ(CoresFromCpuMax(""), std::nullopt);
  EXPECT_EQ(CoresFromCpuMax("garbage"), std::nullopt);
}

TEST(WorkerThreads, SplitsTheBudgetUnlessTheOperatorChose) {
  EXPECT_EQ(WorkerThreads(2, 1, nullptr), 2);
  EXPECT_EQ(WorkerThreads(8, 1, nullptr), 8);
  EXPECT_EQ(WorkerThreads(8, 3, nullptr), 2);
  EXPECT_EQ(WorkerThreads(1, 1, nullptr), 1);
  EXPECT_EQ(WorkerThreads(2, 4, nullptr), 1);   // Never below one.
  EXPECT_EQ(WorkerThreads(2, 1, "1"), 1);       // OMP_NUM_THREADS wins.
  EXPECT_EQ(WorkerThreads(8, 2, "3"), 3);
  EXPECT_EQ(WorkerThreads(8, 1, "0"), 8);       // Not a thread count: ignored.
  EXPECT_EQ(WorkerThreads(8, 1, "many"), 8);
}

// A fake cgroup root whose every level (the root of the path read from
// /proc/self/cgroup, since "" is its top) carries a 2-core quota.
TEST(CpuBudget, AQuotaCapsTheAffinityMask) {
  const std::filesystem::path root = std::filesystem::path(testing::TempDir()) / "cgroup";
  std::filesystem::create_directories(root);
  std::ofstream(root / "cpu.max") << "200000 100000\n";
  const int cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  EXPECT_EQ(CpuBudget(root.string()), std::min(cpus, 2));
  std::ofstream(root / "cpu.max") << "max 100000\n";
  EXPECT_GE(CpuBudget(root.string()), 1);
  EXPECT_LE(CpuBudget(root.string()), cpus);
}

}  // namespace
}  // namespace fms
