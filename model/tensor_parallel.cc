#include "model/tensor_parallel.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fms {

absl::StatusOr<ShardLayout> MakeShardLayout(const LlamaConfig& config, int rank,
                                            int world_size) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is outside a group of ", world_size));
  }
  const int64_t world = world_size;
  auto indivisible = [&](const char* field, int64_t value) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: ", field, " ", value, " cannot be split over NUM_SHARD=", world_size,
        " workers"));
  };
  if (config.num_heads % world != 0) {
    return indivisible("num_attention_heads", config.num_heads);
  }
  if (config.intermediate_size % world != 0) {
    return indivisible("intermediate_size", config.intermediate_size);
  }
  const int64_t kv = config.num_kv_heads;
  if (kv % world != 0 && world % kv != 0) {
    return indivisible("num_key_value_heads", kv);
  }
  ShardLayout layout{.rank = rank, .world_size = world_size};
  layout.heads = config.num_heads / world;
  layout.first_head = rank * layout.heads;
  if (kv >= world) {
    layout.kv_heads = kv / world;
    layout.first_kv_head = rank * layout.kv_heads;
  } else {
    layout.kv_heads = 1;  // Replicated: world / kv ranks share each kv head.
    layout.first_kv_head = rank / (world / kv);
  }
  layout.intermediate = config.intermediate_size / world;
  layout.first_intermediate = rank * layout.intermediate;
  layout.vocab_rows = (config.vocab_size + world - 1) / world;
  layout.first_vocab_row = rank * layout.vocab_rows;
  layout.real_vocab_rows = std::clamp<int64_t>(
      config.vocab_size - layout.first_vocab_row, 0, layout.vocab_rows);
  return layout;
}

}  // namespace fms
