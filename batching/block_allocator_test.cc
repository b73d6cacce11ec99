#include "batching/block_allocator.h"

#include <algorithm>
#include <vector>

#include "gtest/gtest.h"

namespace fms {
namespace {

BlockKey Key(int32_t token) {
  const std::vector<int32_t> tokens{token};
  return ChainBlockKey(PrefixRoot(""), tokens);
}

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
  allocator.Share(a[0]);
  EXPECT_EQ(allocator.ref_count(a[0]), 2);
  allocator.Free(a);
  EXPECT_EQ(allocator.num_free(), 1);  // Still held by its second owner.
  allocator.Free(a);
  EXPECT_EQ(allocator.num_free(), 2);
}

TEST(BlockAllocator, RegisteredBlocksOutliveTheirOwnersUntilEvicted) {
  BlockAllocator allocator(3);
  auto a = *allocator.Allocate(2);
  ASSERT_TRUE(allocator.Register(a[0], Key(7)));
  allocator.Free(a);
  EXPECT_EQ(allocator.num_free(), 3);  // Cached blocks count as free ...
  EXPECT_EQ(allocator.num_cached(), 1);
  EXPECT_EQ(allocator.Lookup(Key(7)), a[0]);
  // ... but blocks without content are taken first.
  auto b = *allocator.Allocate(2);
  EXPECT_EQ(std::count(b.begin(), b.end(), a[0]), 0);
  EXPECT_EQ(allocator.Lookup(Key(7)), a[0]);
  allocator.Share(a[0]);  // A hit takes it back out of the free list.
  EXPECT_EQ(allocator.num_free(), 0);
  allocator.Free(std::vector<int32_t>{a[0]});
  auto c = *allocator.Allocate(1);  // Only the cached one is left: evicted.
  EXPECT_EQ(c[0], a[0]);
  EXPECT_FALSE(allocator.Lookup(Key(7)).has_value());
  EXPECT_EQ(allocator.num_cached(), 0);
}

TEST(BlockAllocator, EvictsLeastRecentlyFreedAndTailsFirst) {
  BlockAllocator allocator(4);
  auto first = *allocator.Allocate(2);
  auto second = *allocator.Allocate(2);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(allocator.Register(first[i], Key(i)));
    ASSERT_TRUE(allocator.Register(second[i], Key(10 + i)));
  }
  allocator.Free(first);   // Its tail, then its head.
  allocator.Free(second);
  EXPECT_EQ(allocator.Allocate(1)->at(0), first[1]);
  EXPECT_EQ(allocator.Allocate(1)->at(0), first[0]);
  EXPECT_EQ(allocator.Allocate(1)->at(0), second[1]);
  EXPECT_EQ(allocator.Lookup(Key(10)), second[0]);
}

TEST(BlockAllocator, OneBlockPerContent) {
  BlockAllocator allocator(2);
  auto a = *allocator.Allocate(2);
  EXPECT_TRUE(allocator.Register(a[0], Key(1)));
  EXPECT_FALSE(allocator.Register(a[1], Key(1)));  // A duplicate stays uncached.
  allocator.Free(a);
  EXPECT_EQ(allocator.num_cached(), 1);
}

TEST(PrefixHash, KeysChainTheWholePrefixAndTheAdapter) {
  const std::vector<int32_t> x{1, 2, 3}, y{1, 2, 4};
  const BlockKey root = PrefixRoot("");
  EXPECT_EQ(ChainBlockKey(root, x), ChainBlockKey(root, x));
  EXPECT_NE(ChainBlockKey(root, x), ChainBlockKey(root, y));
  EXPECT_NE(ChainBlockKey(ChainBlockKey(root, x), y), ChainBlockKey(ChainBlockKey(root, y), y));
  EXPECT_NE(ChainBlockKey(PrefixRoot("lora@1"), x), ChainBlockKey(root, x));
  EXPECT_NE(PrefixRoot("ab"), PrefixRoot("a"));
}

TEST(BlockAllocatorDeathTest, DoubleFreeCrashes) {
  BlockAllocator allocator(1);
  auto a = *allocator.Allocate(1);
  allocator.Free(a);
  EXPECT_DEATH(allocator.Free(a), "double free");
}

}  // namespace
}  // namespace fms
