#include "model/torch_threads.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace fms {
namespace {

TEST(ConfigureTorchThreads, SetsIntraOpThreadsExplicitly) {
  EXPECT_EQ(ConfigureTorchThreads({.intra_op_threads = 2}), 2);
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(at::get_num_interop_threads(), 1);

  EXPECT_EQ(ConfigureTorchThreads({.intra_op_threads = 1}), 1);
  EXPECT_EQ(at::get_num_threads(), 1);
}

TEST(SerialTorchOnThisThread, OnlyThisThreadTurnsSerial) {
  ConfigureTorchThreads({.intra_op_threads = 2});
  int other = 0;
  std::thread([&] {
    SerialTorchOnThisThread();
    other = at::get_num_threads();
  }).join();
  EXPECT_EQ(other, 1);
  EXPECT_EQ(at::get_num_threads(), 2);
}

TEST(ConfigureTorchThreads, ZeroMeansAllCores) {
  const int cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  EXPECT_EQ(ConfigureTorchThreads({}), cores);
}

TEST(ConfigureTorchThreads, ParallelForInProjectCodeUsesEveryThread) {
  ConfigureTorchThreads({.intra_op_threads = 2});
  // at::parallel_for is compiled into this file: without -fopenmp it runs
  // the whole range on the calling thread.
  std::atomic<int> threads_seen{0};
  at::parallel_for(0, 2, 1, [&](int64_t, int64_t) {
    threads_seen |= 1 << at::get_thread_num();
  });
  EXPECT_EQ(threads_seen.load(), 0b11);
}

}  // namespace
}  // namespace fms
