// BlockAllocator: owns the ids of the KV cache blocks, their reference counts
// and, for automatic prefix caching, which full blocks hold known content.
// Ids only: the memory lives in model/.
//
// A block is free when no sequence holds it. A free block whose content was
// registered (Register: a content key, see prefix_hash.h) stays findable by
// that key until it is allocated again: free blocks without content go
// first, then registered ones, least recently freed first (LRU), so cached
// prefixes are evicted only when the pool runs out. Share() takes a
// registered block back, free or held by others.
// Scheduler thread only.

#ifndef FMS_BATCHING_BLOCK_ALLOCATOR_H_
#define FMS_BATCHING_BLOCK_ALLOCATOR_H_

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "batching/prefix_hash.h"

namespace fms {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);

  int64_t num_blocks() const { return static_cast<int64_t>(ref_counts_.size()); }
  // Free blocks, with or without registered content.
  int64_t num_free() const {
    return static_cast<int64_t>(uncached_.size() + cached_free_.size());
  }
  // Blocks with registered content, held or free.
  int64_t num_cached() const { return static_cast<int64_t>(block_of_key_.size()); }

  // `n` blocks with reference count 1, their content forgotten; nullopt
  // (nothing taken) when fewer than `n` are free.
  std::optional<std::vector<int32_t>> Allocate(int64_t n);

  // Drops one reference of each block; a block with none left is free.
  // Blocks are released last to first, so that a sequence's tail is evicted
  // before its prefix. Freeing a free block is a bug and crashes.
  void Free(std::span<const int32_t> blocks);

  // Records that held `block` holds the content `key`. False (nothing
  // recorded) when another block already holds that content.
  bool Register(int32_t block, const BlockKey& key);
  // The block holding content `key`, if any.
  std::optional<int32_t> Lookup(const BlockKey& key) const;
  // One more reference of a registered block (taken out of the free LRU if
  // it had none) or of a held one.
  void Share(int32_t block);

  int32_t ref_count(int32_t block) const { return ref_counts_.at(block); }

 private:
  void Forget(int32_t block);

  std::vector<int32_t> uncached_;        // Free, no content: a stack.
  std::list<int32_t> cached_free_;       // Free, registered: LRU first.
  std::vector<std::list<int32_t>::iterator> lru_position_;  // Per block.
  std::vector<bool> in_lru_;                                 // Per block.
  std::vector<int32_t> ref_counts_;                          // Per block.
  std::vector<std::optional<BlockKey>> key_;                  // Per block.
  std::unordered_map<BlockKey, int32_t, BlockKeyHash> block_of_key_;
};

}  // namespace fms

#endif  // FMS_BATCHING_BLOCK_ALLOCATOR_H_
