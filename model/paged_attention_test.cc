#include "model/paged_attention.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace fms {
namespace {

constexpr int64_t kHeads = 4, kKvHeads = 2, kDim = 8, kBlockSize = 4;

// Softmax attention of one query position over keys [0, position], written
// out directly: q [heads, d], keys/values [position + 1, kv_heads, d].
at::Tensor ReferenceAttention(const at::Tensor& q, const at::Tensor& keys,
                              const at::Tensor& values) {
  std::vector<at::Tensor> heads;
  for (int64_t h = 0; h < kHeads; ++h) {
    const int64_t kv = h / (kHeads / kKvHeads);
    const at::Tensor scores =
        at::matmul(keys.select(1, kv), q[h]) / std::sqrt(double(kDim));  // [keys]
    heads.push_back(at::matmul(at::softmax(scores, 0), values.select(1, kv)));
  }
  return at::stack(heads);  // [heads, d]
}

// A fresh prefill, a prefill continuing a cached context and two decodes in one
// step, against ReferenceAttention in fp32 on the same (rounded) inputs.
void ExpectMatchesReference(at::ScalarType dtype, double tolerance) {
  at::manual_seed(0);
  // Sequence lengths after this step and tokens in this step:
  // a fresh prefill, a prefill continuing a cached context, two decodes.
  const std::vector<int64_t> total = {6, 11, 9, 2}, step = {6, 4, 1, 1};
  const int64_t num_blocks = 16;
  const at::Tensor key_cache =
      at::randn({num_blocks * kBlockSize, kKvHeads, kDim}).to(dtype);
  const at::Tensor value_cache = at::randn_like(key_cache);
  ForwardBatch batch;
  std::vector<int32_t> free_blocks = {9, 2, 14, 5, 0, 11, 7, 3, 12, 1};
  for (size_t s = 0; s < total.size(); ++s) {
    SequenceChunk chunk;
    chunk.num_tokens = step[s];
    chunk.context_len = total[s] - step[s];
    for (int64_t b = 0; b < (total[s] + kBlockSize - 1) / kBlockSize; ++b) {
      chunk.block_table.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
    batch.sequences.push_back(chunk);
    batch.token_ids.resize(batch.token_ids.size() + step[s]);
  }
  const AttentionPlan plan = BuildAttentionPlan(batch, kBlockSize, at::kCPU);
  const int64_t tokens = static_cast<int64_t>(batch.token_ids.size());
  const at::Tensor q = at::randn({tokens, kHeads, kDim}).to(dtype);
  const at::Tensor out = PagedAttention(plan, q, key_cache, value_cache);
  ASSERT_EQ(out.scalar_type(), dtype);

  int64_t row = 0;
  for (size_t s = 0; s < total.size(); ++s) {
    const SequenceChunk& chunk = batch.sequences[s];
    for (int64_t i = 0; i < chunk.num_tokens; ++i, ++row) {
      const int64_t position = chunk.context_len + i;
      std::vector<int64_t> slots;
      for (int64_t p = 0; p <= position; ++p) {
        slots.push_back(chunk.block_table[p / kBlockSize] * kBlockSize + p % kBlockSize);
      }
      const at::Tensor index = at::tensor(slots, at::kLong);
      const at::Tensor expected =
          ReferenceAttention(q[row].to(at::kFloat),
                             key_cache.index_select(0, index).to(at::kFloat),
                             value_cache.index_select(0, index).to(at::kFloat));
      EXPECT_TRUE(at::allclose(out[row].to(at::kFloat), expected, tolerance, tolerance))
          << "sequence " << s << " position " << position;
    }
  }
}

TEST(PagedAttention, MatchesReferenceForMixedPrefillAndDecode) {
  ExpectMatchesReference(at::kFloat, 1e-5);
}

// Reduced precision on CPU: decode attention computes in fp32 and rounds once.
TEST(PagedAttention, MatchesReferenceInBfloat16) {
  ExpectMatchesReference(at::kBFloat16, 1e-2);
}

TEST(PagedAttention, PlanListsLogitRowsAndWriteSlots) {
  ForwardBatch batch;
  batch.token_ids = {5, 6, 7, 8};
  batch.sequences.push_back({.num_tokens = 3, .context_len = 0, .block_table = {2}});
  batch.sequences.push_back(
      {.num_tokens = 1, .context_len = 5, .block_table = {0, 1}, .all_logits = true});
  const AttentionPlan plan = BuildAttentionPlan(batch, kBlockSize, at::kCPU);
  EXPECT_TRUE(at::equal(plan.write_slots, at::tensor({8, 9, 10, 5}, at::kLong)));
  EXPECT_TRUE(at::equal(plan.positions, at::tensor({0, 1, 2, 5}, at::kLong)));
  EXPECT_TRUE(at::equal(plan.logit_rows, at::tensor({2, 3}, at::kLong)));
  EXPECT_EQ(NumLogitRows(batch), 2);
}

TEST(PagedAttention, ShortBlockTableIsABrokenInvariant) {
  ForwardBatch batch;
  batch.token_ids = {1, 2, 3, 4, 5};
  batch.sequences.push_back({.num_tokens = 5, .context_len = 0, .block_table = {0}});
  EXPECT_THROW(BuildAttentionPlan(batch, kBlockSize, at::kCPU), c10::Error);
}

}  // namespace
}  // namespace fms
