#include "batching/block_allocator.h"

#include "gtest/gtest.h"

namespace fms {
namespace {

TEST(BlockAllocator, AllocatesDistinctBlocksUntilExhausted) {
  BlockAllocator allocator(4);
  auto a = allocator.Allocate(3);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_FALSE(allocator.Allocate(2).has_value());  // All or nothing.
  EXPECT_EQ(allocator.num_free(), 1);
  allocator.Free(*a);
  EXPECT_EQ(allocator.num_free(), 4);
  EXPECT_EQ(allocator.Allocate(4)->size(), 4u);
}

TEST(BlockAllocator, ReferenceCountsKeepSharedBlocks) {
  BlockAllocator allocator(2);
  auto a = *allocator.Allocate(1);
  allocator.AddRef(a[0]);
  EXPECT_EQ(allocator.ref_count(a[0]), 2);
  allocator.Free(a);
  EXPECT_EQ(allocator.num_free(), 1);  // Still held by its second owner.
  allocator.Free(a);
  EXPECT_EQ(allocator.num_free(), 2);
}

TEST(BlockAllocatorDeathTest, DoubleFreeCrashes) {
  BlockAllocator allocator(1);
  auto a = *allocator.Allocate(1);
  allocator.Free(a);
  EXPECT_DEATH(allocator.Free(a), "double free");
}

}  // namespace
}  // namespace fms
