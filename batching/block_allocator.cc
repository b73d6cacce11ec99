#include "batching/block_allocator.h"

#include "batching/check.h"

namespace fms {

BlockAllocator::BlockAllocator(int64_t num_blocks)
    : lru_position_(num_blocks), in_lru_(num_blocks, false), ref_counts_(num_blocks, 0),
      key_(num_blocks) {
  for (int64_t b = num_blocks - 1; b >= 0; --b) uncached_.push_back(static_cast<int32_t>(b));
}

void BlockAllocator::Forget(int32_t block) {
  if (key_[block].has_value()) block_of_key_.erase(*key_[block]);
  key_[block].reset();
}

std::optional<std::vector<int32_t>> BlockAllocator::Allocate(int64_t n) {
  if (n > num_free()) return std::nullopt;
  std::vector<int32_t> blocks;
  blocks.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    int32_t block;
    if (!uncached_.empty()) {
      block = uncached_.back();
      uncached_.pop_back();
    } else {  // Evict the least recently freed cached block.
      block = cached_free_.front();
      cached_free_.pop_front();
      in_lru_[block] = false;
      Forget(block);
    }
    ref_counts_[block] = 1;
    blocks.push_back(block);
  }
  return blocks;
}

void BlockAllocator::Free(std::span<const int32_t> blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    const int32_t block = *it;
    FMS_CHECK(ref_counts_.at(block) > 0, "double free of a KV block");
    if (--ref_counts_[block] > 0) continue;
    if (key_[block].has_value()) {
      lru_position_[block] = cached_free_.insert(cached_free_.end(), block);
      in_lru_[block] = true;
    } else {
      uncached_.push_back(block);
    }
  }
}

bool BlockAllocator::Register(int32_t block, const BlockKey& key) {
  FMS_CHECK(ref_counts_.at(block) > 0, "registering a free block");
  if (key_[block].has_value()) return *key_[block] == key;
  if (!block_of_key_.emplace(key, block).second) return false;
  key_[block] = key;
  return true;
}

std::optional<int32_t> BlockAllocator::Lookup(const BlockKey& key) const {
  auto it = block_of_key_.find(key);
  if (it == block_of_key_.end()) return std::nullopt;
  return it->second;
}

void BlockAllocator::Share(int32_t block) {
  FMS_CHECK(ref_counts_.at(block) > 0 || key_[block].has_value(),
            "sharing a free block without content");
  if (in_lru_[block]) {
    cached_free_.erase(lru_position_[block]);
    in_lru_[block] = false;
  }
  ++ref_counts_[block];
}

}  // namespace fms
