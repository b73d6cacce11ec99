// LlamaModel::Load: Hugging Face tensor names and shapes (shared/docs/
// llama-and-checkpoints.md section 2.5) into fused per-layer weights.

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/llama_model.h"
#include "model/safetensors.h"

namespace fms {

// Rows [begin, begin + length) of a tensor with `rows` rows.
struct RowRange {
  std::string name;  // Without the ".weight" / ".bias" suffix.
  int64_t rows = 0;
  int64_t begin = 0;
  int64_t length = 0;
};

// Reads this rank's slice of every weight (tensor_parallel.h): only the
// slices' bytes are copied out of the mapped checkpoint.
class LlamaLoader {
 public:
  LlamaLoader(const WeightSource& weights, const LlamaConfig& config,
              const ShardLayout& layout, const LlamaOptions& options)
      : weights_(weights), config_(config), layout_(layout), options_(options) {}

  absl::Status LoadInto(LlamaModel* model) {
    model_non_finite_ = &model->non_finite_weights_;
    auto embed = VocabRows("model.embed_tokens.weight");
    if (!embed.ok()) return embed.status();
    model->embed_ = *std::move(embed);
    auto norm = Read("model.norm.weight", {config_.hidden_size});
    if (!norm.ok()) return norm.status();
    model->final_norm_ = *std::move(norm);
    if (config_.tie_word_embeddings) {
      model->lm_head_ = Projection(model->embed_);
    } else {
      auto head = VocabRows("lm_head.weight");
      if (!head.ok()) return head.status();
      model->lm_head_ = Projection(*std::move(head));
    }
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      auto layer = Layer(l);
      if (!layer.ok()) return layer.status();
      model->layers_.push_back(*std::move(layer));
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<at::Tensor> Read(const std::string& name, std::vector<int64_t> shape,
                                  const TensorSlice& slice = {}) {
    auto tensor = weights_.Read(name, shape, options_.dtype, slice);
    if (!tensor.ok()) return tensor.status();
    // Served anyway (a damaged row may never be used), but reported: the
    // requests it reaches end with an error (LlamaEngine, non-finite logits).
    if (!tensor->isfinite().all().item<bool>()) model_non_finite_->push_back(name);
    return tensor->to(options_.device);
  }

  // w [out, in] as the model multiplies by it: with oneDNN's packed copy,
  // except in the eager baseline, which multiplies by w alone.
  LinearWeight Projection(at::Tensor w) const {
    if (options_.eager_baseline) return LinearWeight{.w = std::move(w)};
    return MakeLinearWeight(std::move(w));
  }

  // This rank's vocabulary rows [vocab_rows, hidden], zero-padded at the end.
  absl::StatusOr<at::Tensor> VocabRows(const std::string& name) {
    auto rows = Read(name, {config_.vocab_size, config_.hidden_size},
                     {.dim = 0, .begin = layout_.first_vocab_row,
                      .length = layout_.real_vocab_rows});
    if (!rows.ok() || layout_.real_vocab_rows == layout_.vocab_rows) return rows;
    return at::constant_pad_nd(*rows, {0, 0, 0, layout_.vocab_rows - layout_.real_vocab_rows});
  }

  // Reads each range of `parts` and stacks them along rows; `suffix` is
  // "weight" ([rows, cols]) or "bias" ([rows]).
  absl::StatusOr<at::Tensor> ReadFused(const std::vector<RowRange>& parts,
                                       const std::string& suffix, int64_t cols) {
    std::vector<at::Tensor> tensors;
    for (const RowRange& part : parts) {
      std::vector<int64_t> shape = {part.rows};
      if (suffix == "weight") shape.push_back(cols);
      auto tensor = Read(absl::StrCat(part.name, ".", suffix), shape,
                         {.dim = 0, .begin = part.begin, .length = part.length});
      if (!tensor.ok()) return tensor.status();
      tensors.push_back(*std::move(tensor));
    }
    return at::cat(tensors, 0);
  }

  absl::StatusOr<LayerWeights> Layer(int64_t l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const int64_t hidden = config_.hidden_size, inter = config_.intermediate_size;
    const int64_t d = config_.head_dim;
    const int64_t q_rows = config_.num_heads * d, kv_rows = config_.num_kv_heads * d;
    const ShardLayout& s = layout_;
    const std::vector<RowRange> qkv = {
        {p + "self_attn.q_proj", q_rows, s.first_head * d, s.heads * d},
        {p + "self_attn.k_proj", kv_rows, s.first_kv_head * d, s.kv_heads * d},
        {p + "self_attn.v_proj", kv_rows, s.first_kv_head * d, s.kv_heads * d}};
    const std::vector<RowRange> gate_up = {
        {p + "mlp.gate_proj", inter, s.first_intermediate, s.intermediate},
        {p + "mlp.up_proj", inter, s.first_intermediate, s.intermediate}};
    // Row-parallel o_proj and down_proj: this rank's input columns.
    const TensorSlice o_cols = {.dim = 1, .begin = s.first_head * d, .length = s.heads * d};
    const TensorSlice down_cols = {.dim = 1, .begin = s.first_intermediate,
                                   .length = s.intermediate};
    LayerWeights w;
    std::vector<std::pair<at::Tensor*, absl::StatusOr<at::Tensor>>> reads;
    reads.emplace_back(&w.input_norm, Read(p + "input_layernorm.weight", {hidden}));
    reads.emplace_back(&w.post_norm,
                       Read(p + "post_attention_layernorm.weight", {hidden}));
    std::vector<std::pair<LinearWeight*, absl::StatusOr<at::Tensor>>> projections;
    projections.emplace_back(&w.qkv, ReadFused(qkv, "weight", hidden));
    projections.emplace_back(&w.o,
                             Read(p + "self_attn.o_proj.weight", {hidden, q_rows}, o_cols));
    projections.emplace_back(&w.gate_up, ReadFused(gate_up, "weight", hidden));
    projections.emplace_back(&w.down,
                             Read(p + "mlp.down_proj.weight", {hidden, inter}, down_cols));
    if (config_.qkv_bias) reads.emplace_back(&w.qkv_bias, ReadFused(qkv, "bias", 0));
    if (config_.o_bias) {  // Row-parallel biases are whole, added once.
      reads.emplace_back(&w.o_bias, Read(p + "self_attn.o_proj.bias", {hidden}));
    }
    if (config_.mlp_bias) {
      reads.emplace_back(&w.gate_up_bias, ReadFused(gate_up, "bias", 0));
      reads.emplace_back(&w.down_bias, Read(p + "mlp.down_proj.bias", {hidden}));
    }
    for (auto& [target, tensor] : reads) {
      if (!tensor.ok()) return tensor.status();
      *target = *std::move(tensor);
    }
    for (auto& [target, tensor] : projections) {
      if (!tensor.ok()) return tensor.status();
      *target = Projection(*std::move(tensor));
    }
    return w;
  }

  const WeightSource& weights_;
  std::vector<std::string>* model_non_finite_ = nullptr;
  const LlamaConfig& config_;
  const ShardLayout& layout_;
  const LlamaOptions& options_;
};

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(
    const std::string& model_dir, const LlamaOptions& options) {
  auto config = LoadLlamaConfig(model_dir);
  if (!config.ok()) return config.status();
  auto checkpoint = Checkpoint::Open(model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  return Load(*config, *checkpoint, options);
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(
    const LlamaConfig& config, const WeightSource& weights, const LlamaOptions& options) {
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16 &&
      options.dtype != at::kHalf) {
    return absl::InvalidArgumentError("dtype must be float32, bfloat16 or float16");
  }
  const Collectives* group = options.collectives;
  auto layout = MakeShardLayout(config, group ? group->rank() : 0,
                                group ? group->world_size() : 1);
  if (!layout.ok()) return layout.status();
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, *layout, options));
  LlamaLoader loader(weights, model->config_, model->layout_, model->options_);
  if (absl::Status status = loader.LoadInto(model.get()); !status.ok()) {
    return status;
  }
  return model;
}

}  // namespace fms
