#include "model/llama_model.h"

#include <cmath>

#include "model/linear.h"
#include "model/paged_attention.h"

namespace fms {
namespace {

}  // namespace

LlamaModel::LlamaModel(LlamaConfig config, LlamaOptions options)
    : config_(std::move(config)),
      options_(options),
      rope_(config_, options.device) {}

KvCache LlamaModel::MakeCache(const KvCacheOptions& options) const {
  return KvCache(config_.num_layers, config_.num_kv_heads, config_.head_dim,
                 options,
                 at::TensorOptions().dtype(options_.dtype).device(options_.device));
}

at::Tensor LlamaModel::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x32 * at::rsqrt(variance + config_.rms_norm_eps)).to(x.scalar_type());
}

// Row blocks of a fused weight (or bias) as separate matmuls: the unfused
// eager baseline. `sizes` are the row counts of the blocks.
at::Tensor UnfusedLinear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                         const std::vector<int64_t>& sizes) {
  std::vector<at::Tensor> outputs;
  int64_t row = 0;
  for (int64_t n : sizes) {
    outputs.push_back(Linear(x, w.narrow(0, row, n),
                             b.defined() ? b.narrow(0, row, n) : at::Tensor()));
    row += n;
  }
  return at::cat(outputs, -1);
}

at::Tensor LlamaModel::Mlp(const LayerWeights& w, const at::Tensor& x) const {
  // [T, 2 * intermediate] -> gate, up [T, intermediate]
  const int64_t inter = config_.intermediate_size;
  const at::Tensor gate_up =
      options_.eager_baseline ? UnfusedLinear(x, w.gate_up, w.gate_up_bias, {inter, inter})
                              : Linear(x, w.gate_up, w.gate_up_bias);
  const auto halves = gate_up.chunk(2, -1);
  return Linear(at::silu(halves[0]) * halves[1], w.down, w.down_bias);
}

at::Tensor LlamaModel::Qkv(const LayerWeights& w, const at::Tensor& x) const {
  if (!options_.eager_baseline) return Linear(x, w.qkv, w.qkv_bias);
  const int64_t q = config_.num_heads * config_.head_dim;
  const int64_t kv = config_.num_kv_heads * config_.head_dim;
  return UnfusedLinear(x, w.qkv, w.qkv_bias, {q, kv, kv});
}

at::Tensor LlamaModel::Forward(const ForwardBatch& batch, KvCache& cache) const {
  const AttentionPlan plan = BuildAttentionPlan(batch, cache.block_size(), options_.device,
                                                /*batch_decodes=*/!options_.eager_baseline);
  const auto [cos, sin] = rope_.CosSin(plan.positions);  // [T, head_dim] each
  const int64_t tokens = static_cast<int64_t>(batch.token_ids.size());
  const int64_t heads = config_.num_heads, kv_heads = config_.num_kv_heads;
  const int64_t d = config_.head_dim;
  const at::Tensor ids =
      at::tensor(at::ArrayRef<int32_t>(batch.token_ids), at::kInt)
          .to(options_.device, at::kLong);
  at::Tensor hidden = at::embedding(embed_, ids);  // [T, hidden]
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    // [T, (heads + 2 * kv_heads) * d] -> q [T, heads, d], k/v [T, kv_heads, d]
    const at::Tensor qkv = Qkv(w, RmsNorm(hidden, w.input_norm));
    const auto parts = qkv.split({heads * d, kv_heads * d, kv_heads * d}, -1);
    const at::Tensor q = Rope::Apply(parts[0].view({tokens, heads, d}), cos, sin);
    const at::Tensor k = Rope::Apply(parts[1].view({tokens, kv_heads, d}), cos, sin);
    cache.keys(l).index_copy_(0, plan.write_slots, k);
    cache.values(l).index_copy_(0, plan.write_slots,
                                parts[2].reshape({tokens, kv_heads, d}));
    const at::Tensor attn =
        PagedAttention(plan, q, cache.keys(l), cache.values(l));  // [T, heads, d]
    hidden = hidden + Linear(attn.view({tokens, heads * d}), w.o, w.o_bias);
    hidden = hidden + Mlp(w, RmsNorm(hidden, w.post_norm));
  }
  // [R, hidden] -> [R, vocab]
  const at::Tensor last = RmsNorm(hidden.index_select(0, plan.logit_rows), final_norm_);
  return Linear(last, lm_head_, at::Tensor()).to(at::kFloat);
}

}  // namespace fms
