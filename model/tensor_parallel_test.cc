#include "model/tensor_parallel.h"

#include <gtest/gtest.h>

namespace fms {
namespace {

LlamaConfig Config(int64_t heads, int64_t kv_heads, int64_t vocab = 512) {
  LlamaConfig c;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.intermediate_size = 96;
  c.vocab_size = vocab;
  return c;
}

// The kv head that global query head `h` reads in the unsplit model.
int64_t KvHeadOf(const LlamaConfig& c, int64_t h) {
  return h / (c.num_heads / c.num_kv_heads);
}

TEST(ShardLayoutTest, OneRankHoldsEverything) {
  auto layout = MakeShardLayout(Config(8, 2), 0, 1);
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->heads, 8);
  EXPECT_EQ(layout->kv_heads, 2);
  EXPECT_EQ(layout->intermediate, 96);
  EXPECT_EQ(layout->vocab_rows, 512);
  EXPECT_EQ(layout->real_vocab_rows, 512);
}

// For every split that is allowed, every query head of a rank must find its
// own kv head among the rank's kv heads at the same GQA offset as unsplit.
TEST(ShardLayoutTest, QueryHeadsKeepTheirKvHeadsInEverySplit) {
  for (int64_t kv : {1, 2, 4, 8}) {
    for (int world : {1, 2, 4, 8}) {
      const LlamaConfig c = Config(8, kv);
      for (int rank = 0; rank < world; ++rank) {
        auto layout = MakeShardLayout(c, rank, world);
        ASSERT_TRUE(layout.ok()) << layout.status();
        const int64_t group = layout->heads / layout->kv_heads;  // Local GQA ratio.
        for (int64_t i = 0; i < layout->heads; ++i) {
          EXPECT_EQ(layout->first_kv_head + i / group, KvHeadOf(c, layout->first_head + i))
              << "kv " << kv << " world " << world << " rank " << rank << " head " << i;
        }
      }
    }
  }
}

TEST(ShardLayoutTest, ReplicatesKvHeadsWhenFewerThanRanks) {
  // 12 ranks, 4 kv heads: ranks 0-2 share kv head 0, 3-5 head 1, ...
  const LlamaConfig c = Config(24, 4);
  for (int rank = 0; rank < 12; ++rank) {
    auto layout = MakeShardLayout(c, rank, 12);
    ASSERT_TRUE(layout.ok());
    EXPECT_EQ(layout->kv_heads, 1);
    EXPECT_EQ(layout->first_kv_head, rank / 3);
  }
}

TEST(ShardLayoutTest, PadsTheLastVocabularySlice) {
  const LlamaConfig c = Config(8, 8, /*vocab=*/10);
  std::vector<int64_t> real;
  for (int rank = 0; rank < 4; ++rank) {
    auto layout = MakeShardLayout(c, rank, 4);
    ASSERT_TRUE(layout.ok());
    EXPECT_EQ(layout->vocab_rows, 3);
    EXPECT_EQ(layout->first_vocab_row, 3 * rank);
    real.push_back(layout->real_vocab_rows);
  }
  EXPECT_EQ(real, (std::vector<int64_t>{3, 3, 3, 1}));
}

TEST(ShardLayoutTest, RefusesSplitsThatDoNotDivide) {
  auto heads = MakeShardLayout(Config(6, 6), 0, 4);
  EXPECT_EQ(heads.status().message(),
            "config.json: num_attention_heads 6 cannot be split over NUM_SHARD=4 workers");
  auto kv = MakeShardLayout(Config(12, 3), 0, 4);
  EXPECT_EQ(kv.status().message(),
            "config.json: num_key_value_heads 3 cannot be split over NUM_SHARD=4 workers");
  LlamaConfig odd = Config(8, 8);
  odd.intermediate_size = 90;
  EXPECT_FALSE(MakeShardLayout(odd, 0, 4).ok());
  EXPECT_FALSE(MakeShardLayout(Config(8, 8), 2, 2).ok());
}

}  // namespace
}  // namespace fms
