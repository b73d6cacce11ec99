#include "model/torch_threads.h"

#include <ATen/Parallel.h>
#include <unistd.h>

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

TEST(ConfigureTorchThreads, ZeroMeansAllCores) {
  const int cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  EXPECT_EQ(ConfigureTorchThreads({}), cores);
}

}  // namespace
}  // namespace fms
