#include "model/kv_cache.h"

#include <algorithm>

#include "model/forward_batch.h"

namespace fms {

int64_t KvPoolBlocks(const KvPoolBudget& budget, int64_t num_layers, int64_t kv_heads,
                     int64_t head_dim, int64_t element_bytes) {
  const int64_t per_sequence =
      (budget.max_sequence_length + budget.block_size - 1) / budget.block_size;
  // Keys and values, every layer.
  const double block_bytes = 2.0 * static_cast<double>(num_layers * kv_heads * head_dim *
                                                       budget.block_size * element_bytes);
  const int64_t bytes = budget.budget_bytes > 0 ? budget.budget_bytes : kDefaultKvBudgetBytes;
  const auto affordable = static_cast<int64_t>(static_cast<double>(bytes) / block_bytes);
  // An explicit budget is taken whole (prefix caching keeps what is spare);
  // the default stops at what the batch can use, so that a small test
  // server does not commit gigabytes it never touches.
  if (budget.budget_bytes > 0) return std::max(per_sequence, affordable);
  return std::max(per_sequence, std::min(per_sequence * budget.max_batch_size, affordable));
}

KvCache::KvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                 const KvCacheOptions& options,
                 at::TensorOptions tensor_options)
    : options_(options) {
  TORCH_CHECK(options.num_blocks > 0 && options.block_size > 0,
              "KV cache needs blocks");
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    keys_.push_back(at::zeros(
        {options.num_blocks * options.block_size, num_kv_heads, head_dim},
        tensor_options));
    values_.push_back(at::zeros_like(keys_.back()));
  }
}

int64_t NumLogitRows(const ForwardBatch& batch) {
  int64_t rows = 0;
  for (const SequenceChunk& s : batch.sequences) {
    rows += s.all_logits ? s.num_tokens : 1;
  }
  return rows;
}

}  // namespace fms
