// Content keys of full KV blocks, for automatic prefix caching. Block i's key
// covers the adapter and every token of blocks 0..i: it chains its parent's
// key, so equal keys mean equal prefixes, not merely equal blocks.
//
// 128 bits from two lanes of a multiply-xorshift mix, each seeded from
// std::random_device once per process: accidental collisions are out of
// reach (2^-128 per pair), and a client cannot aim prompts at a chosen key
// without the seeds (vLLM moved to SHA-256 after its predictable hash, see
// CVE-2025-25183). Not a cryptographic hash; keys never leave the process.

#ifndef FMS_BATCHING_PREFIX_HASH_H_
#define FMS_BATCHING_PREFIX_HASH_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace fms {

struct BlockKey {
  uint64_t lo = 0;
  uint64_t hi = 0;

  bool operator==(const BlockKey&) const = default;
};

struct BlockKeyHash {
  size_t operator()(const BlockKey& k) const { return static_cast<size_t>(k.lo ^ k.hi); }
};

// The parent key of a sequence's first block: its adapter ("" for none), so
// that prompt-tuning placeholders and LoRA outputs never match another's.
BlockKey PrefixRoot(std::string_view adapter);

// The key of a block holding `tokens` after the prefix keyed `parent`.
BlockKey ChainBlockKey(const BlockKey& parent, std::span<const int32_t> tokens);

}  // namespace fms

#endif  // FMS_BATCHING_PREFIX_HASH_H_
