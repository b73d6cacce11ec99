#include "model/decode_attention.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/forward_batch.h"
#include "model/paged_attention.h"

namespace fms {
namespace {

struct Shape {
  int64_t heads, kv_heads, head_dim, block_size;
};

// Decodes of contexts 1..53 tokens over shuffled blocks against PagedAttention's
// decode path (SDPA over the gathered keys, fp32 inside for bf16): q comes
// from the q columns of a wider qkv tensor, as in the model.
void ExpectMatchesPagedAttention(const Shape& shape, at::ScalarType dtype,
                                 double tolerance) {
  at::manual_seed(7);
  const std::vector<int64_t> lengths = {1, 2, 17, 53, 16, 5};
  const int64_t num_blocks = 101, d = shape.head_dim;  // 17 * b mod 101: a shuffle
  const at::Tensor key_cache =
      at::randn({num_blocks * shape.block_size, shape.kv_heads, d}).to(dtype);
  const at::Tensor value_cache = at::randn_like(key_cache);
  std::vector<int32_t> free_blocks;
  for (int32_t b = 0; b < num_blocks; ++b) free_blocks.push_back((b * 17) % num_blocks);
  ForwardBatch batch;
  for (int64_t length : lengths) {
    SequenceChunk chunk{.num_tokens = 1, .context_len = length - 1};
    for (int64_t b = 0; b < (length + shape.block_size - 1) / shape.block_size; ++b) {
      chunk.block_table.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
    batch.sequences.push_back(chunk);
    batch.token_ids.push_back(0);
  }
  DecodeContext context{.block_size = shape.block_size};
  for (const SequenceChunk& s : batch.sequences) {
    context.lengths.push_back(s.context_len + 1);
    context.block_tables.push_back(s.block_table.data());
  }
  const int64_t rows = static_cast<int64_t>(lengths.size());
  // [T, (heads + 2 * kv_heads) * d]: q is its first heads * d columns.
  const at::Tensor qkv =
      at::randn({rows, (shape.heads + 2 * shape.kv_heads) * d}).to(dtype);
  const at::Tensor q = qkv.narrow(1, 0, shape.heads * d);
  const at::Tensor ours =
      DecodeAttention(context, q, shape.heads, key_cache, value_cache);  // [T, heads * d]
  const AttentionPlan plan = BuildAttentionPlan(batch, shape.block_size, at::kCPU);
  const at::Tensor ref = PagedAttention(plan, q.contiguous().view({rows, shape.heads, d}),
                                        key_cache, value_cache);  // [T, heads, d]
  ASSERT_EQ(ours.scalar_type(), dtype);
  const double err =
      (ours.to(at::kDouble) - ref.reshape({rows, -1}).to(at::kDouble)).abs().max().item<double>();
  EXPECT_LE(err, tolerance) << "heads " << shape.heads << " kv " << shape.kv_heads << " d "
                            << d << " " << at::toString(dtype);
}

TEST(DecodeAttentionTest, MatchesPagedAttentionInFp32) {
  ExpectMatchesPagedAttention({.heads = 9, .kv_heads = 3, .head_dim = 64, .block_size = 16},
                              at::kFloat, 1e-5);
  ExpectMatchesPagedAttention({.heads = 4, .kv_heads = 4, .head_dim = 32, .block_size = 1},
                              at::kFloat, 1e-5);
}

TEST(DecodeAttentionTest, MatchesPagedAttentionInBf16) {
  // Both sum in fp32 and round once: outputs |x| < 4 differ by at most a few
  // bf16 ulps (2^-6 at 2..4).
  ExpectMatchesPagedAttention({.heads = 9, .kv_heads = 3, .head_dim = 64, .block_size = 16},
                              at::kBFloat16, 3e-2);
  ExpectMatchesPagedAttention({.heads = 8, .kv_heads = 2, .head_dim = 128, .block_size = 4},
                              at::kBFloat16, 3e-2);
}

TEST(DecodeAttentionTest, HeadDimsOffTheVectorWidthTakeTheScalarLoop) {
  ExpectMatchesPagedAttention({.heads = 4, .kv_heads = 2, .head_dim = 8, .block_size = 4},
                              at::kFloat, 1e-5);
  ExpectMatchesPagedAttention({.heads = 2, .kv_heads = 1, .head_dim = 24, .block_size = 3},
                              at::kBFloat16, 3e-2);
}

}  // namespace
}  // namespace fms
