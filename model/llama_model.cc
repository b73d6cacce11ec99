#include "model/llama_model.h"

#include <algorithm>
#include <cmath>

#include "model/decode_kernels.h"
#include "model/linear.h"
#include "model/lora_batch.h"
#include "model/paged_attention.h"

namespace fms {

LlamaModel::LlamaModel(LlamaConfig config, ShardLayout layout, LlamaOptions options)
    : config_(std::move(config)),
      layout_(layout),
      options_(options),
      rope_(config_, options.device) {}

absl::StatusOr<std::shared_ptr<const Adapter>> LlamaModel::LoadAdapter(
    const std::string& id, const std::string& dir) const {
  return fms::LoadAdapter(
      {.id = id, .dir = dir, .dtype = options_.dtype, .device = options_.device}, config_,
      layout_);
}

KvCache LlamaModel::MakeCache(const KvCacheOptions& options) const {
  return KvCache(config_.num_layers, layout_.kv_heads, config_.head_dim,
                 options,
                 at::TensorOptions().dtype(options_.dtype).device(options_.device));
}

at::Tensor LlamaModel::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  if (UsesRowLoops()) return RmsNormRows(x.contiguous(), weight, config_.rms_norm_eps);
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

at::Tensor LlamaModel::Mlp(int64_t layer, const at::Tensor& x, const LoraBatch& lora) const {
  const LayerWeights& w = layers_[layer];
  // [T, 2 * intermediate] -> gate, up [T, intermediate]
  const int64_t inter = layout_.intermediate;
  at::Tensor gate_up =
      options_.eager_baseline ? UnfusedLinear(x, w.gate_up.w, w.gate_up_bias, {inter, inter})
                              : Linear(x, w.gate_up, w.gate_up_bias);
  if (!lora.empty()) lora.Apply(layer, LoraSite::kGateUp, x, gate_up);
  at::Tensor act;  // [T, intermediate]
  if (UsesRowLoops()) {
    act = SiluMul(gate_up);
  } else {
    const auto halves = gate_up.chunk(2, -1);
    act = at::silu(halves[0]) * halves[1];
  }
  return RowParallel(act, w.down, w.down_bias,
                     [&](const at::Tensor& in, at::Tensor& out) {
                       if (!lora.empty()) lora.Apply(layer, LoraSite::kDown, in, out);
                     });
}

at::Tensor LlamaModel::Qkv(int64_t layer, const at::Tensor& x, const LoraBatch& lora) const {
  const LayerWeights& w = layers_[layer];
  const int64_t q = layout_.heads * config_.head_dim;
  const int64_t kv = layout_.kv_heads * config_.head_dim;
  at::Tensor qkv = options_.eager_baseline ? UnfusedLinear(x, w.qkv.w, w.qkv_bias, {q, kv, kv})
                                           : Linear(x, w.qkv, w.qkv_bias);
  if (!lora.empty()) lora.Apply(layer, LoraSite::kQkv, x, qkv);
  return qkv;
}

void LlamaModel::InjectPrompts(const ForwardBatch& batch, at::Tensor& hidden) const {
  int64_t row = 0;
  for (const SequenceChunk& s : batch.sequences) {
    const Adapter* a = s.adapter;
    const int64_t virtual_tokens = a != nullptr ? a->virtual_tokens() : 0;
    // Positions [context_len, min(context_len + n, virtual_tokens)) are virtual.
    const int64_t n = std::min(s.context_len + s.num_tokens, virtual_tokens) - s.context_len;
    if (n > 0) hidden.narrow(0, row, n).copy_(a->prompt.narrow(0, s.context_len, n));
    row += s.num_tokens;
  }
}

at::Tensor LlamaModel::Embed(const at::Tensor& ids) const {
  if (options_.collectives == nullptr) return at::embedding(embed_, ids);
  // Ids outside this rank's rows look up row 0 and are zeroed; the sum over
  // the ranks leaves each id's own row.
  const at::Tensor local = ids - layout_.first_vocab_row;  // [T]
  const at::Tensor mine = (local >= 0) & (local < layout_.vocab_rows);
  at::Tensor hidden = at::embedding(embed_, local.clamp(0, layout_.vocab_rows - 1))
                          .mul_(mine.unsqueeze(-1).to(embed_.scalar_type()));
  options_.collectives->AllReduceSum(hidden);
  return hidden;  // [T, hidden]
}

at::Tensor LlamaModel::RowParallel(const at::Tensor& x, const LinearWeight& w,
                                   const at::Tensor& b, const AddDelta& delta) const {
  if (options_.collectives == nullptr) {
    at::Tensor y = Linear(x, w, b);
    delta(x, y);
    return y;
  }
  // [T, out]: this rank's partial sums, its part of the LoRA delta included
  // (A holds this rank's input columns, so the deltas sum like the products).
  at::Tensor partial = Linear(x, w, at::Tensor()).contiguous();
  delta(x, partial);
  options_.collectives->AllReduceSum(partial);
  return b.defined() ? partial.add_(b) : partial;
}

at::Tensor LlamaModel::Logits(const at::Tensor& last) const {
  const at::Tensor logits = Linear(last, lm_head_, at::Tensor()).to(at::kFloat);
  if (options_.collectives == nullptr) return logits;
  const at::Tensor all = options_.collectives->GatherColumnsToRank0(logits.contiguous());
  if (!all.defined()) return all;
  return all.narrow(1, 0, config_.vocab_size);  // Drops the last rank's padding.
}

at::Tensor LlamaModel::RotateAndWrite(const AttentionPlan& plan, const at::Tensor& cos,
                                      const at::Tensor& sin, int64_t layer, at::Tensor& qkv,
                                      KvCache& cache) const {
  const int64_t tokens = qkv.size(0), heads = layout_.heads, kv_heads = layout_.kv_heads;
  const int64_t d = config_.head_dim;
  if (UsesRowLoops()) {
    RotateAndCache({heads, kv_heads, d}, cos, sin,
                   {plan.write_slots.const_data_ptr<int64_t>(), static_cast<size_t>(tokens)},
                   qkv, cache.keys(layer), cache.values(layer));
    return qkv.narrow(1, 0, heads * d).view({tokens, heads, d});
  }
  // q [T, heads, d], k/v [T, kv_heads, d]
  const auto parts = qkv.split({heads * d, kv_heads * d, kv_heads * d}, -1);
  const at::Tensor k = Rope::Apply(parts[1].view({tokens, kv_heads, d}), cos, sin);
  cache.keys(layer).index_copy_(0, plan.write_slots, k);
  cache.values(layer).index_copy_(0, plan.write_slots,
                                  parts[2].reshape({tokens, kv_heads, d}));
  return Rope::Apply(parts[0].view({tokens, heads, d}), cos, sin);
}

void LlamaModel::AddResidual(at::Tensor& hidden, const at::Tensor& y) const {
  if (UsesRowLoops()) {
    AddInPlace(hidden, y.contiguous());
  } else {
    hidden = hidden + y;
  }
}

at::Tensor LlamaModel::Forward(const ForwardBatch& batch, KvCache& cache) const {
  if (UsesDecodePath(batch)) return ForwardDecodes(batch, cache);
  const AttentionPlan plan = BuildAttentionPlan(batch, cache.block_size(), options_.device,
                                                /*batch_decodes=*/!options_.eager_baseline);
  const auto [cos, sin] = rope_.CosSin(plan.positions);  // [T, head_dim] each
  const int64_t tokens = static_cast<int64_t>(batch.token_ids.size());
  const at::Tensor ids =
      at::tensor(at::ArrayRef<int32_t>(batch.token_ids), at::kInt)
          .to(options_.device, at::kLong);
  at::Tensor hidden = Embed(ids);  // [T, hidden]
  InjectPrompts(batch, hidden);
  const LoraBatch lora(batch, options_.device);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    // [T, (heads + 2 * kv_heads) * d]
    at::Tensor qkv = Qkv(l, RmsNorm(hidden, w.input_norm), lora);
    const at::Tensor q = RotateAndWrite(plan, cos, sin, l, qkv, cache);  // [T, heads, d]
    const at::Tensor attn =
        PagedAttention(plan, q, cache.keys(l), cache.values(l));  // [T, heads, d]
    AddResidual(hidden, RowParallel(attn.view({tokens, -1}), w.o, w.o_bias,
                                    [&](const at::Tensor& in, at::Tensor& out) {
                                      if (!lora.empty()) lora.Apply(l, LoraSite::kO, in, out);
                                    }));
    AddResidual(hidden, Mlp(l, RmsNorm(hidden, w.post_norm), lora));
  }
  // [R, hidden] -> [R, vocab]
  const at::Tensor last = RmsNorm(hidden.index_select(0, plan.logit_rows), final_norm_);
  return Logits(last);
}

}  // namespace fms
