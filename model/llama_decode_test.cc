// The CPU decode path (LlamaModel::ForwardDecodes) against the general
// forward: the same decode tokens give the same logits whether their step is
// decodes only (the decode path) or shares the step with a prompt chunk (the
// general path), and the keys the decode path caches serve the next step.

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/forward_batch.h"
#include "model/llama_model.h"
#include "model/random_weights.h"

namespace fms {
namespace {

constexpr int64_t kBlockSize = 4;

LlamaConfig SmallConfig(int64_t head_dim) {
  LlamaConfig config;
  config.hidden_size = 64;
  config.intermediate_size = 96;
  config.num_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.head_dim = head_dim;
  config.vocab_size = 96;
  config.max_position_embeddings = 256;
  config.rms_norm_eps = 1e-5;
  return config;
}

SequenceChunk Chunk(int64_t tokens, int64_t context, std::vector<int32_t> blocks) {
  return {.num_tokens = tokens, .context_len = context, .block_table = std::move(blocks)};
}

ForwardBatch Batch(std::vector<SequenceChunk> chunks, int32_t first_id) {
  ForwardBatch batch;
  for (const SequenceChunk& c : chunks) {
    for (int64_t i = 0; i < c.num_tokens; ++i) batch.token_ids.push_back(first_id++ % 90);
  }
  batch.sequences = std::move(chunks);
  return batch;
}

void ExpectPathsAgree(at::ScalarType dtype, int64_t head_dim, double rtol) {
  c10::InferenceMode inference;
  auto model = LlamaModel::Load(SmallConfig(head_dim), RandomWeights(at::kCPU, 3, 0.2),
                                {.dtype = dtype});
  ASSERT_TRUE(model.ok()) << model.status();
  const SequenceChunk a = Chunk(7, 0, {3, 9, 14}), b = Chunk(5, 0, {1, 12});
  // Two caches with the same two prompts in them.
  std::vector<KvCache> caches;
  for (int i = 0; i < 2; ++i) {
    caches.push_back((*model)->MakeCache({.num_blocks = 32, .block_size = kBlockSize}));
    (*model)->Forward(Batch({a, b}, 5), caches.back());
  }
  for (int64_t step = 0; step < 3; ++step) {
    const SequenceChunk da = Chunk(1, 7 + step, a.block_table);
    const SequenceChunk db = Chunk(1, 5 + step, b.block_table);
    // Decodes alone: the decode path.
    const at::Tensor ours = (*model)->Forward(Batch({da, db}, 40 + step), caches[0]);
    // The same decodes beside a prompt chunk: the general path.
    const SequenceChunk prompt = Chunk(2, 2 * step, {20, 21});
    const at::Tensor ref =
        (*model)->Forward(Batch({da, db, prompt}, 40 + step), caches[1]).narrow(0, 0, 2);
    ASSERT_EQ(ours.sizes(), ref.sizes());
    const double scale = ref.abs().max().item<double>();
    const double err = (ours - ref).abs().max().item<double>();
    EXPECT_LE(err, rtol * scale) << at::toString(dtype) << " head_dim " << head_dim
                                 << " step " << step;
  }
}

TEST(LlamaDecodeTest, DecodePathGivesTheGeneralPathsLogitsFp32) {
  ExpectPathsAgree(at::kFloat, 16, 1e-5);
  ExpectPathsAgree(at::kFloat, 8, 1e-5);  // Attention's scalar loop.
}

TEST(LlamaDecodeTest, DecodePathGivesTheGeneralPathsLogitsBf16) {
  // The general path's projections at 3 rows run through oneDNN, the decode
  // path's 2 rows through the AVX512-BF16 kernel: bf16 roundings apart.
  ExpectPathsAgree(at::kBFloat16, 16, 2e-2);
}

}  // namespace
}  // namespace fms
