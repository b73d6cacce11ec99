// Attention over the paged KV cache for a ragged batch, through
// at::scaled_dot_product_attention.
//
// The batch's metadata (which cache slots each token writes, which slots each
// query reads, masks) is built once per forward as an AttentionPlan and reused
// by every layer. Decode tokens of all sequences share one SDPA call over
// their gathered, masked keys; each prefill chunk gets its own call, causal
// when it starts at position 0 and with an explicit mask when it continues a
// cached context (SDPA's is_causal is top-left aligned, wrong there). GQA uses
// SDPA's enable_gqa, without copying kv heads.

#ifndef FMS_MODEL_PAGED_ATTENTION_H_
#define FMS_MODEL_PAGED_ATTENTION_H_

#include <ATen/ATen.h>

#include <vector>

#include "model/forward_batch.h"

namespace fms {

struct PrefillChunk {
  int64_t first_row = 0;   // Row of its first token in the batch.
  int64_t num_tokens = 0;
  at::Tensor key_slots;    // [context_len + num_tokens] int64
  at::Tensor mask;         // [num_tokens, keys] bool, or undefined: causal.
};

struct AttentionPlan {
  at::Tensor positions;     // [T] int64
  at::Tensor write_slots;   // [T] int64: cache slot of each new token.
  std::vector<PrefillChunk> prefills;
  at::Tensor decode_rows;       // [B] int64, or undefined when no decodes.
  at::Tensor decode_key_slots;  // [B, max_keys] int64 (padding reads slot 0)
  at::Tensor decode_mask;       // [B, 1, 1, max_keys] bool
  at::Tensor logit_rows;        // [R] int64: rows whose logits are returned.
};

// Builds the plan for `batch`; crashes on a malformed batch (a scheduler bug).
// Without `batch_decodes` every decode gets its own SDPA call (the eager
// baseline of the benchmark).
AttentionPlan BuildAttentionPlan(const ForwardBatch& batch, int64_t block_size,
                                 at::Device device, bool batch_decodes = true);

// q [T, heads, head_dim]; caches [slots, kv_heads, head_dim] already holding
// this step's keys and values. Returns [T, heads, head_dim].
at::Tensor PagedAttention(const AttentionPlan& plan, const at::Tensor& q,
                          const at::Tensor& key_cache,
                          const at::Tensor& value_cache);

}  // namespace fms

#endif  // FMS_MODEL_PAGED_ATTENTION_H_
