// KvPoolBlocks: how a worker sizes its own KV pool.

#include "model/kv_cache.h"

#include "gtest/gtest.h"

namespace fms {
namespace {

TEST(KvPoolBlocks, EveryBatchSlotGetsAFullLengthSequenceWhenTheBudgetAllows) {
  // 4 sequences of 40 positions in blocks of 4: 10 blocks each.
  EXPECT_EQ(KvPoolBlocks({.max_sequence_length = 40, .max_batch_size = 4, .block_size = 4},
                         /*num_layers=*/2, /*kv_heads=*/2, /*head_dim=*/16, /*element_bytes=*/4),
            40);
  EXPECT_EQ(KvPoolBlocks({.max_sequence_length = 41, .max_batch_size = 1, .block_size = 4}, 2, 2,
                         16, 4),
            11);  // A partial block counts whole.
}

TEST(KvPoolBlocks, TheBudgetCapsThePool) {
  // SmolLM2-135M in bf16: 2 * 30 layers * 3 kv heads * 64 * 16 positions * 2 bytes
  // = 368,640 bytes a block; 4 GiB holds 11,650 of them.
  const KvPoolBudget smollm2{.max_sequence_length = 8192, .max_batch_size = 16};
  EXPECT_EQ(KvPoolBlocks(smollm2, 30, 3, 64, 2), 16 * 512);
  KvPoolBudget wide = smollm2;
  wide.max_batch_size = 64;
  EXPECT_EQ(KvPoolBlocks(wide, 30, 3, 64, 2), 11650);
  // fp32 halves what fits.
  EXPECT_EQ(KvPoolBlocks(wide, 30, 3, 64, 4), 5825);
}

TEST(KvPoolBlocks, AnExplicitBudgetIsTakenWhole) {
  // KV_CACHE_MEMORY: 1 GiB holds 2,912 bf16 blocks, more than 2 sequences need.
  const KvPoolBudget given{.max_sequence_length = 8192, .max_batch_size = 2,
                           .budget_bytes = int64_t{1} << 30};
  EXPECT_EQ(KvPoolBlocks(given, 30, 3, 64, 2), 2912);
}

TEST(KvPoolBlocks, AtLeastOneFullLengthSequence) {
  const KvPoolBudget tiny{.max_sequence_length = 8192, .max_batch_size = 16,
                          .budget_bytes = 1 << 20};
  EXPECT_EQ(KvPoolBlocks(tiny, 30, 3, 64, 2), 512);
}

}  // namespace
}  // namespace fms
