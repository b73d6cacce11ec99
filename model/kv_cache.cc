#include "model/kv_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <vector>

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
  return std::max(per_sequence,
                  static_cast<int64_t>(static_cast<double>(bytes) / block_bytes));
}

namespace {

// A zeroed CPU tensor whose pages the kernel commits only when written: the
// pool costs what the cache holds, not what it could hold.
at::Tensor LazyZeros(at::IntArrayRef shape, at::TensorOptions options) {
  auto bytes = static_cast<size_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
  for (int64_t d : shape) bytes *= static_cast<size_t>(d);
  void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  TORCH_CHECK(data != MAP_FAILED, "cannot map ", bytes, " bytes for the KV cache");
  return at::from_blob(data, shape, [bytes](void* p) { munmap(p, bytes); }, options);
}

}  // namespace

KvCache::KvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                 const KvCacheOptions& options,
                 at::TensorOptions tensor_options)
    : options_(options) {
  TORCH_CHECK(options.num_blocks > 0 && options.block_size > 0,
              "KV cache needs blocks");
  const std::vector<int64_t> shape{options.num_blocks * options.block_size, num_kv_heads,
                                   head_dim};  // [slots, kv_heads, head_dim]
  const bool cpu = tensor_options.device().is_cpu();
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    keys_.push_back(cpu ? LazyZeros(shape, tensor_options) : at::zeros(shape, tensor_options));
    values_.push_back(cpu ? LazyZeros(shape, tensor_options) : at::zeros(shape, tensor_options));
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
