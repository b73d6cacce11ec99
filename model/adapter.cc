#include "model/adapter.h"

#include <torch/csrc/jit/serialization/pickle.h>

#include <array>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <regex>

#include "absl/strings/str_cat.h"
#include "model/safetensors.h"

namespace fms {
namespace {

// PEFT's names for a LoRA matrix of layer l: base_model.model.model.layers.
// <l>.<self_attn|mlp>.<projection>.lora_<A|B>.weight.
const std::regex& LoraName() {
  static const std::regex re(
      R"(base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.)"
      R"((q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_([AB])\.weight)");
  return re;
}

enum Projection { kQ, kK, kV, kO, kGate, kUp, kDown, kProjections };

Projection ProjectionOf(const std::string& name) {
  static const std::map<std::string, Projection> kByName = {
      {"q_proj", kQ},       {"k_proj", kK},   {"v_proj", kV},      {"o_proj", kO},
      {"gate_proj", kGate}, {"up_proj", kUp}, {"down_proj", kDown}};
  return kByName.at(name);
}

// One projection's A [r, in] and B [out, r] as stored (names only).
struct StoredPair {
  std::string a, b;
};

// The geometry of projection p: whole input and output sizes, and this
// rank's slice of B's rows (column-parallel) or of A's columns (row-parallel).
struct Geometry {
  int64_t in = 0, out = 0;
  TensorSlice a_slice, b_slice;
};

Geometry GeometryOf(Projection p, const LlamaConfig& c, const ShardLayout& s) {
  const int64_t d = c.head_dim, h = c.hidden_size, inter = c.intermediate_size;
  switch (p) {
    case kQ:
      return {h, c.num_heads * d, {}, {.dim = 0, .begin = s.first_head * d, .length = s.heads * d}};
    case kK:
    case kV:
      return {h, c.num_kv_heads * d, {},
              {.dim = 0, .begin = s.first_kv_head * d, .length = s.kv_heads * d}};
    case kO:
      return {c.num_heads * d, h,
              {.dim = 1, .begin = s.first_head * d, .length = s.heads * d}, {}};
    case kGate:
    case kUp:
      return {h, inter, {}, {.dim = 0, .begin = s.first_intermediate, .length = s.intermediate}};
    default:  // kDown
      return {inter, h, {.dim = 1, .begin = s.first_intermediate, .length = s.intermediate}, {}};
  }
}

class LoraReader {
 public:
  LoraReader(const Checkpoint& checkpoint, const AdapterLoadOptions& options,
             const AdapterConfig& adapter, const LlamaConfig& config, const ShardLayout& layout)
      : checkpoint_(checkpoint), options_(options), adapter_(adapter), config_(config),
        layout_(layout) {}

  absl::StatusOr<std::vector<LoraLayer>> Read() {
    std::vector<std::array<std::optional<StoredPair>, kProjections>> stored(config_.num_layers);
    for (const std::string& name : checkpoint_.Names()) {
      std::smatch m;
      if (!std::regex_match(name, m, LoraName())) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", name, " is not a LoRA weight of a LLaMa projection"));
      }
      const int64_t layer = std::stoll(m[1].str().substr(0, 9));
      if (layer >= config_.num_layers) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor ", name, ": the model has ", config_.num_layers, " layers"));
      }
      auto& pair = stored[layer][ProjectionOf(m[2].str())];
      if (!pair.has_value()) pair.emplace();
      (m[3].str() == "A" ? pair->a : pair->b) = name;
    }
    std::vector<LoraLayer> layers(config_.num_layers);
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      auto& s = stored[l];
      auto qkv = Fused(s, {kQ, kK, kV});
      auto gate_up = Fused(s, {kGate, kUp});
      auto o = Fused(s, {kO});
      auto down = Fused(s, {kDown});
      for (auto* r : {&qkv, &gate_up, &o, &down}) {
        if (!r->ok()) return r->status();
      }
      layers[l] = {*qkv, *o, *gate_up, *down};
    }
    return layers;
  }

 private:
  // Reads one stored matrix (fp32, this rank's slice), checking its shape.
  absl::StatusOr<at::Tensor> Matrix(const std::string& name, std::vector<int64_t> shape,
                                    const TensorSlice& slice) {
    auto t = checkpoint_.Read(name, shape, at::kFloat, slice);
    if (!t.ok()) return t.status();
    if (!t->isfinite().all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " holds NaN or infinity"));
    }
    return t;
  }

  // The projections `parts` of one layer fused: A stacked, B block-diagonal.
  absl::StatusOr<LoraPair> Fused(
      const std::array<std::optional<StoredPair>, kProjections>& stored,
      const std::vector<Projection>& parts) {
    const int64_t r = adapter_.rank;
    std::vector<at::Tensor> as, bs;
    int64_t out_rows = 0;
    for (Projection p : parts) {
      const Geometry g = GeometryOf(p, config_, layout_);
      const int64_t rows = g.b_slice.length >= 0 ? g.b_slice.length : g.out;
      out_rows += rows;
      if (!stored[p].has_value()) {
        as.emplace_back();
        bs.push_back(at::zeros({rows, 0}));
        continue;
      }
      const StoredPair& names = *stored[p];
      if (names.a.empty() || names.b.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor ", names.a.empty() ? names.b : names.a, " has no lora_",
            names.a.empty() ? "A" : "B", " partner"));
      }
      auto a = Matrix(names.a, {r, g.in}, g.a_slice);
      if (!a.ok()) return a.status();
      auto b = Matrix(names.b, {g.out, r}, g.b_slice);
      if (!b.ok()) return b.status();
      as.push_back(*a);
      bs.push_back(b->mul_(adapter_.LoraScale()));
    }
    std::vector<at::Tensor> present;
    for (const at::Tensor& a : as) {
      if (a.defined()) present.push_back(a);
    }
    if (present.empty()) return LoraPair{};
    const at::Tensor a = at::cat(present, 0);  // [rank_sum, in]
    at::Tensor b = at::zeros({out_rows, a.size(0)});  // [out, rank_sum]
    int64_t row = 0, col = 0;
    for (const at::Tensor& block : bs) {
      b.narrow(0, row, block.size(0)).narrow(1, col, block.size(1)).copy_(block);
      row += block.size(0);
      col += block.size(1);
    }
    const auto to = at::TensorOptions().dtype(options_.dtype).device(options_.device);
    return LoraPair{.a = a.t().to(to).contiguous(), .b = b.t().to(to).contiguous()};
  }

  const Checkpoint& checkpoint_;
  const AdapterLoadOptions& options_;
  const AdapterConfig& adapter_;
  const LlamaConfig& config_;
  const ShardLayout& layout_;
};

// TGIS's decoder.pt: a tensor saved with torch.save.
absl::StatusOr<at::Tensor> ReadDecoderPt(const std::string& dir) {
  std::ifstream in(dir + "/decoder.pt", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.eof() && !in) return absl::InvalidArgumentError("decoder.pt cannot be read");
  try {
    const c10::IValue value = torch::jit::pickle_load(bytes);
    if (!value.isTensor()) {
      return absl::InvalidArgumentError("decoder.pt does not hold a tensor");
    }
    return value.toTensor().to(at::kFloat);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("decoder.pt cannot be read: ", e.what()));
  }
}

absl::StatusOr<at::Tensor> ReadPrompt(const AdapterLoadOptions& options,
                                      const AdapterConfig& adapter, const LlamaConfig& config) {
  at::Tensor prompt;
  const char* name = "prompt_embeddings";
  if (adapter.peft_type == "TGIS_DECODER_PT") {
    auto t = ReadDecoderPt(options.dir);
    if (!t.ok()) return t.status();
    prompt = *t;
    name = "decoder.pt";
  } else {
    auto checkpoint = Checkpoint::Open(options.dir);
    if (!checkpoint.ok()) return checkpoint.status();
    auto t = checkpoint->Read(name, {adapter.num_virtual_tokens, config.hidden_size}, at::kFloat);
    if (!t.ok()) return t.status();
    prompt = *t;
  }
  if (prompt.dim() != 2 || prompt.size(0) < 1 || prompt.size(1) != config.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", name, " has shape ", c10::str(prompt.sizes()), ", expected [n, ",
        config.hidden_size, "]"));
  }
  if (!prompt.isfinite().all().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " holds NaN or infinity"));
  }
  return prompt.to(at::TensorOptions().dtype(options.dtype).device(options.device)).contiguous();
}

int64_t Bytes(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

}  // namespace

absl::StatusOr<std::shared_ptr<const Adapter>> LoadAdapter(
    const AdapterLoadOptions& options, const LlamaConfig& config, const ShardLayout& layout) {
  auto adapter_config = ReadAdapterConfig(options.dir);
  if (!adapter_config.ok()) return adapter_config.status();
  auto adapter = std::make_shared<Adapter>();
  adapter->id = options.id;
  adapter->config = *adapter_config;
  if (adapter->config.kind == AdapterKind::kPromptTuning) {
    auto prompt = ReadPrompt(options, adapter->config, config);
    if (!prompt.ok()) return prompt.status();
    adapter->prompt = *prompt;
    adapter->bytes = Bytes(adapter->prompt);
    return adapter;
  }
  if (adapter->config.kind != AdapterKind::kLora) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter type ", adapter->config.peft_type, " is not currently supported"));
  }
  auto checkpoint = Checkpoint::Open(options.dir);
  if (!checkpoint.ok()) return checkpoint.status();
  auto layers = LoraReader(*checkpoint, options, adapter->config, config, layout).Read();
  if (!layers.ok()) return layers.status();
  adapter->layers = *std::move(layers);
  for (const LoraLayer& l : adapter->layers) {
    for (const LoraPair* p : {&l.qkv, &l.o, &l.gate_up, &l.down}) {
      adapter->bytes += Bytes(p->a) + Bytes(p->b);
    }
  }
  return adapter;
}

}  // namespace fms
