#include "batching/block_allocator.h"

#include "batching/check.h"

namespace fms {

BlockAllocator::BlockAllocator(int64_t num_blocks) : ref_counts_(num_blocks, 0) {
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

std::optional<std::vector<int32_t>> BlockAllocator::Allocate(int64_t n) {
  if (n > num_free()) return std::nullopt;
  std::vector<int32_t> blocks;
  for (int64_t i = 0; i < n; ++i) {
    blocks.push_back(free_.back());
    free_.pop_back();
    ref_counts_[blocks.back()] = 1;
  }
  return blocks;
}

void BlockAllocator::AddRef(int32_t block) {
  FMS_CHECK(ref_counts_.at(block) > 0, "AddRef of a free block");
  ++ref_counts_[block];
}

void BlockAllocator::Free(std::span<const int32_t> blocks) {
  for (int32_t block : blocks) {
    FMS_CHECK(ref_counts_.at(block) > 0, "double free of a KV block");
    if (--ref_counts_[block] == 0) free_.push_back(block);
  }
}

}  // namespace fms
