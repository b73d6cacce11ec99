// The paged KV cache: per layer, a pool of fixed-size blocks of keys and
// values on the model's device. Block ids belong to the scheduler's
// allocator; the model only reads and writes the slots it is told to.

#ifndef FMS_MODEL_KV_CACHE_H_
#define FMS_MODEL_KV_CACHE_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace fms {

struct KvCacheOptions {
  int64_t num_blocks = 0;   // Blocks in the pool (per layer).
  int64_t block_size = 16;  // Token positions per block.
};

// What a rank's pool is sized for: `budget_bytes` of keys and values
// (KV_CACHE_MEMORY; 0: kDefaultKvBudgetBytes), but always at least one
// sequence of `max_sequence_length`. The worker that owns the pool sizes it
// (it knows its dtype, device and kv heads); the scheduler learns the count
// from EngineInfo, and the front end derives MAX_BATCH_SIZE's default from
// it. On the CPU the pool's pages are committed as they are first written.
struct KvPoolBudget {
  int64_t max_sequence_length = 0;
  int64_t budget_bytes = 0;
  int64_t block_size = 16;
};

inline constexpr int64_t kDefaultKvBudgetBytes = int64_t{4} << 30;

// Blocks per layer for a rank holding `kv_heads` heads of `head_dim` over
// `num_layers` layers, with `element_bytes` per cached value.
int64_t KvPoolBlocks(const KvPoolBudget& budget, int64_t num_layers, int64_t kv_heads,
                     int64_t head_dim, int64_t element_bytes);

class KvCache {
 public:
  KvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
          const KvCacheOptions& options, at::TensorOptions tensor_options);

  int64_t num_blocks() const { return options_.num_blocks; }
  int64_t block_size() const { return options_.block_size; }

  // [num_blocks * block_size, kv_heads, head_dim]: slot = block * size + offset.
  at::Tensor& keys(int64_t layer) { return keys_[layer]; }
  at::Tensor& values(int64_t layer) { return values_[layer]; }

 private:
  KvCacheOptions options_;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

}  // namespace fms

#endif  // FMS_MODEL_KV_CACHE_H_
