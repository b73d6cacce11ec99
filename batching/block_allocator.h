// BlockAllocator: owns the ids of the KV cache blocks and their reference
// counts (ready for prefix sharing). Ids only: the memory lives in model/.
// Scheduler thread only.

#ifndef FMS_BATCHING_BLOCK_ALLOCATOR_H_
#define FMS_BATCHING_BLOCK_ALLOCATOR_H_

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace fms {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);

  int64_t num_blocks() const { return static_cast<int64_t>(ref_counts_.size()); }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }

  // `n` blocks with reference count 1; nullopt (nothing taken) when fewer
  // than `n` are free.
  std::optional<std::vector<int32_t>> Allocate(int64_t n);

  // Another owner of `block` (prefix sharing).
  void AddRef(int32_t block);

  // Drops one reference of each block; a block with none left is free.
  // Freeing a free block is a bug and crashes.
  void Free(std::span<const int32_t> blocks);

  int32_t ref_count(int32_t block) const { return ref_counts_.at(block); }

 private:
  std::vector<int32_t> free_;        // Stack: the most recently freed first.
  std::vector<int32_t> ref_counts_;  // Per block id.
};

}  // namespace fms

#endif  // FMS_BATCHING_BLOCK_ALLOCATOR_H_
