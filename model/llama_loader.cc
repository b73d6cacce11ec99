// LlamaModel::Load: Hugging Face tensor names and shapes (shared/docs/
// llama-and-checkpoints.md section 2.5) into fused per-layer weights.

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/llama_model.h"
#include "model/safetensors.h"

namespace fms {

class LlamaLoader {
 public:
  LlamaLoader(const Checkpoint& checkpoint, const LlamaConfig& config,
              const LlamaOptions& options)
      : checkpoint_(checkpoint), config_(config), options_(options) {}

  absl::Status LoadInto(LlamaModel* model) {
    const int64_t vocab = config_.vocab_size, hidden = config_.hidden_size;
    auto embed = Read("model.embed_tokens.weight", {vocab, hidden});
    if (!embed.ok()) return embed.status();
    model->embed_ = *std::move(embed);
    auto norm = Read("model.norm.weight", {hidden});
    if (!norm.ok()) return norm.status();
    model->final_norm_ = *std::move(norm);
    if (config_.tie_word_embeddings) {
      model->lm_head_ = model->embed_;
    } else {
      auto head = Read("lm_head.weight", {vocab, hidden});
      if (!head.ok()) return head.status();
      model->lm_head_ = *std::move(head);
    }
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      auto layer = Layer(l);
      if (!layer.ok()) return layer.status();
      model->layers_.push_back(*std::move(layer));
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<at::Tensor> Read(const std::string& name,
                                  std::vector<int64_t> shape) {
    auto tensor = checkpoint_.Read(name, shape, options_.dtype);
    if (!tensor.ok()) return tensor.status();
    return tensor->to(options_.device);
  }

  // Reads `names` (each with its row count) and stacks them along rows;
  // `suffix` is "weight" ([rows, cols]) or "bias" ([rows]).
  absl::StatusOr<at::Tensor> ReadFused(
      const std::vector<std::pair<std::string, int64_t>>& names,
      const std::string& suffix, int64_t cols) {
    std::vector<at::Tensor> parts;
    for (const auto& [name, rows] : names) {
      std::vector<int64_t> shape = {rows};
      if (suffix == "weight") shape.push_back(cols);
      auto part = Read(absl::StrCat(name, ".", suffix), shape);
      if (!part.ok()) return part.status();
      parts.push_back(*std::move(part));
    }
    return at::cat(parts, 0);
  }

  absl::StatusOr<LayerWeights> Layer(int64_t l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const int64_t hidden = config_.hidden_size, inter = config_.intermediate_size;
    const int64_t q_rows = config_.num_heads * config_.head_dim;
    const int64_t kv_rows = config_.num_kv_heads * config_.head_dim;
    const std::vector<std::pair<std::string, int64_t>> qkv = {
        {p + "self_attn.q_proj", q_rows},
        {p + "self_attn.k_proj", kv_rows},
        {p + "self_attn.v_proj", kv_rows}};
    const std::vector<std::pair<std::string, int64_t>> gate_up = {
        {p + "mlp.gate_proj", inter}, {p + "mlp.up_proj", inter}};
    LayerWeights w;
    std::vector<std::pair<at::Tensor*, absl::StatusOr<at::Tensor>>> reads;
    reads.emplace_back(&w.input_norm, Read(p + "input_layernorm.weight", {hidden}));
    reads.emplace_back(&w.post_norm,
                       Read(p + "post_attention_layernorm.weight", {hidden}));
    reads.emplace_back(&w.qkv, ReadFused(qkv, "weight", hidden));
    reads.emplace_back(&w.o, Read(p + "self_attn.o_proj.weight", {hidden, q_rows}));
    reads.emplace_back(&w.gate_up, ReadFused(gate_up, "weight", hidden));
    reads.emplace_back(&w.down, Read(p + "mlp.down_proj.weight", {hidden, inter}));
    if (config_.attention_bias) {
      reads.emplace_back(&w.qkv_bias, ReadFused(qkv, "bias", 0));
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
    return w;
  }

  const Checkpoint& checkpoint_;
  const LlamaConfig& config_;
  const LlamaOptions& options_;
};

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(
    const std::string& model_dir, const LlamaOptions& options) {
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16 &&
      options.dtype != at::kHalf) {
    return absl::InvalidArgumentError("dtype must be float32, bfloat16 or float16");
  }
  auto config = LoadLlamaConfig(model_dir);
  if (!config.ok()) return config.status();
  auto checkpoint = Checkpoint::Open(model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  std::unique_ptr<LlamaModel> model(new LlamaModel(*config, options));
  LlamaLoader loader(*checkpoint, model->config_, model->options_);
  if (absl::Status status = loader.LoadInto(model.get()); !status.ok()) {
    return status;
  }
  return model;
}

}  // namespace fms
