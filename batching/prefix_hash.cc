#include "batching/prefix_hash.h"

#include <random>

namespace fms {
namespace {

struct Seeds {
  uint64_t lo;
  uint64_t hi;
};

const Seeds& ProcessSeeds() {
  static const Seeds seeds = [] {
    std::random_device device;
    auto draw = [&] { return (uint64_t{device()} << 32) ^ device(); };
    return Seeds{draw(), draw()};
  }();
  return seeds;
}

// splitmix64's finaliser: a bijection that spreads every input bit.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t Step(uint64_t state, uint64_t value, uint64_t seed) {
  return Mix(state ^ Mix(value + seed));
}

}  // namespace

BlockKey PrefixRoot(std::string_view adapter) {
  const Seeds& seeds = ProcessSeeds();
  BlockKey key{.lo = Mix(seeds.lo), .hi = Mix(seeds.hi)};
  for (unsigned char c : adapter) {
    key.lo = Step(key.lo, c, seeds.lo);
    key.hi = Step(key.hi, c, seeds.hi);
  }
  key.lo = Step(key.lo, adapter.size(), seeds.lo);  // "ab" + "" differs from "a" + "b".
  key.hi = Step(key.hi, adapter.size(), seeds.hi);
  return key;
}

BlockKey ChainBlockKey(const BlockKey& parent, std::span<const int32_t> tokens) {
  const Seeds& seeds = ProcessSeeds();
  BlockKey key = parent;
  for (int32_t token : tokens) {
    key.lo = Step(key.lo, static_cast<uint32_t>(token), seeds.lo);
    key.hi = Step(key.hi, static_cast<uint32_t>(token), seeds.hi);
  }
  key.lo = Step(key.lo, tokens.size(), seeds.hi);  // Lanes crossed: one more difference.
  key.hi = Step(key.hi, tokens.size(), seeds.lo);
  return key;
}

}  // namespace fms
