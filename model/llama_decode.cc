// LlamaModel's CPU decode path: a batch of one-token decodes with the
// elementwise steps as plain loops (decode_kernels.h) and attention reading
// the paged cache in place (decode_attention.h). Same model as Forward, same
// roundings; five parallel regions a layer (four projections, attention)
// instead of ~40 dispatched ops.

#include <ATen/ATen.h>

#include "model/decode_attention.h"
#include "model/decode_kernels.h"
#include "model/linear.h"
#include "model/llama_model.h"
#include "model/lora_batch.h"

namespace fms {

bool LlamaModel::UsesRowLoops() const {
  return !options_.eager_baseline && options_.device.is_cpu() &&
         (options_.dtype == at::kFloat || options_.dtype == at::kBFloat16);
}

bool LlamaModel::UsesDecodePath(const ForwardBatch& batch) const {
  if (!UsesRowLoops()) return false;
  for (const SequenceChunk& s : batch.sequences) {
    if (s.num_tokens != 1) return false;
  }
  return !batch.sequences.empty();
}

at::Tensor LlamaModel::ForwardDecodes(const ForwardBatch& batch, KvCache& cache) const {
  const int64_t tokens = static_cast<int64_t>(batch.token_ids.size());
  const int64_t block_size = cache.block_size();
  DecodeContext context{.block_size = block_size};
  std::vector<int64_t> positions, slots;
  for (const SequenceChunk& s : batch.sequences) {
    const int64_t block = s.context_len / block_size;
    TORCH_CHECK(block < static_cast<int64_t>(s.block_table.size()),
                "block table too short for position ", s.context_len);
    positions.push_back(s.context_len);
    slots.push_back(s.block_table[block] * block_size + s.context_len % block_size);
    context.lengths.push_back(s.context_len + 1);
    context.block_tables.push_back(s.block_table.data());
  }
  TORCH_CHECK(static_cast<int64_t>(positions.size()) == tokens,
              "token count does not match the chunks");
  const auto [cos, sin] = rope_.CosSin(at::tensor(positions, at::kLong));  // [T, d] each
  const QkvLayout qkv_layout{layout_.heads, layout_.kv_heads, config_.head_dim};
  const int64_t q_width = layout_.heads * config_.head_dim;
  const double eps = config_.rms_norm_eps;

  at::Tensor hidden =
      Embed(at::tensor(at::ArrayRef<int32_t>(batch.token_ids), at::kInt).to(at::kLong));
  InjectPrompts(batch, hidden);  // [T, hidden]
  const LoraBatch lora(batch, options_.device);
  const auto delta = [&](int64_t l, LoraSite site) {
    return [&lora, l, site](const at::Tensor& in, at::Tensor& out) {
      if (!lora.empty()) lora.Apply(l, site, in, out);
    };
  };
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    // [T, (heads + 2 * kv_heads) * d], q and k rotated in place.
    at::Tensor qkv = Qkv(l, RmsNormRows(hidden, w.input_norm, eps), lora);
    RotateAndCache(qkv_layout, cos, sin, slots, qkv, cache.keys(l), cache.values(l));
    const at::Tensor attn = DecodeAttention(context, qkv.narrow(1, 0, q_width),
                                            layout_.heads, cache.keys(l),
                                            cache.values(l));  // [T, heads * d]
    AddInPlace(hidden, RowParallel(attn, w.o, w.o_bias, delta(l, LoraSite::kO)));
    const at::Tensor x = RmsNormRows(hidden, w.post_norm, eps);
    at::Tensor gate_up = Linear(x, w.gate_up, w.gate_up_bias);  // [T, 2 * intermediate]
    delta(l, LoraSite::kGateUp)(x, gate_up);
    AddInPlace(hidden,
               RowParallel(SiluMul(gate_up), w.down, w.down_bias, delta(l, LoraSite::kDown)));
  }
  return Logits(RmsNormRows(hidden, final_norm_, eps));  // [T, vocab] fp32
}

}  // namespace fms
