// Decode attention that reads the paged KV cache in place, on the CPU.
//
// PagedAttention (paged_attention.h) gathers every decode's whole context out
// of the block pool into a fresh [B, kv_heads, keys, d] tensor per layer and
// runs SDPA over it; at batch 1 that is a dozen dispatched ops per layer, at
// batch 16 a copy of the whole context per layer. Here each (token, head)
// task walks its sequence's block table and reads keys and values where they
// are: scores, softmax and the weighted sum in fp32, one parallel region per
// layer. Same numerics as PagedAttention's decode path up to summation order
// (it too computes bf16 decodes in fp32).

#ifndef FMS_MODEL_DECODE_ATTENTION_H_
#define FMS_MODEL_DECODE_ATTENTION_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace fms {

// Where each decode row's keys live: row t attends to positions
// [0, lengths[t]), position p in slot block_tables[t][p / block_size] *
// block_size + p % block_size.
struct DecodeContext {
  std::vector<int64_t> lengths;  // [T]: context_len + 1 (this step's token included)
  std::vector<const int32_t*> block_tables;  // [T]: not owned
  int64_t block_size = 16;
};

// q [T, heads * d] (already rotated; rows may be strided, as q's columns of
// the fused qkv output are); caches [slots, kv_heads, d] contiguous, holding
// this step's keys and values; float or bfloat16, all one dtype. Returns
// [T, heads * d] in q's dtype. Query head h reads kv head h / (heads / kv_heads).
at::Tensor DecodeAttention(const DecodeContext& context, const at::Tensor& q, int64_t heads,
                           const at::Tensor& key_cache, const at::Tensor& value_cache);

}  // namespace fms

#endif  // FMS_MODEL_DECODE_ATTENTION_H_
