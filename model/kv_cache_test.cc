// KvPoolBlocks: how a worker sizes its own KV pool; KvCache: the pool itself.

#include "model/kv_cache.h"

#include "gtest/gtest.h"

namespace fms {
namespace {

TEST(KvPoolBlocks, TheBudgetSizesThePool) {
  // SmolLM2-135M in bf16: 2 * 30 layers * 3 kv heads * 64 * 16 positions * 2 bytes
  // = 368,640 bytes a block; the default 4 GiB holds 11,650 of them.
  const KvPoolBudget smollm2{.max_sequence_length = 8192};
  EXPECT_EQ(KvPoolBlocks(smollm2, 30, 3, 64, 2), 11650);
  // fp32 halves what fits.
  EXPECT_EQ(KvPoolBlocks(smollm2, 30, 3, 64, 4), 5825);
  // KV_CACHE_MEMORY: 1 GiB holds 2,912 bf16 blocks.
  const KvPoolBudget given{.max_sequence_length = 8192, .budget_bytes = int64_t{1} << 30};
  EXPECT_EQ(KvPoolBlocks(given, 30, 3, 64, 2), 2912);
}

TEST(KvPoolBlocks, AtLeastOneFullLengthSequence) {
  const KvPoolBudget tiny{.max_sequence_length = 8192, .budget_bytes = 1 << 20};
  EXPECT_EQ(KvPoolBlocks(tiny, 30, 3, 64, 2), 512);
  // A partial block counts whole.
  EXPECT_EQ(KvPoolBlocks({.max_sequence_length = 41, .budget_bytes = 1, .block_size = 4}, 2, 2,
                         16, 4),
            11);
}

TEST(KvCache, ACpuPoolStartsZeroedAndCommitsPagesOnlyWhenWritten) {
  // 64 Mi slots of one fp32 value per layer: 256 MiB each, 1 GiB mapped.
  KvCache cache(2, 1, 1, {.num_blocks = 1 << 22, .block_size = 16},
                at::TensorOptions().dtype(at::kFloat));
  EXPECT_EQ(cache.keys(0).size(0), int64_t{1} << 26);
  EXPECT_EQ(cache.values(1).narrow(0, 12345678, 4).abs().sum().item<float>(), 0.0f);
  cache.keys(1).narrow(0, 99, 2).fill_(3.0f);
  EXPECT_EQ(cache.keys(1).narrow(0, 98, 4).sum().item<float>(), 6.0f);
}

}  // namespace
}  // namespace fms
