#include "model/llama_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace fms {
namespace {

using json = nlohmann::json;

// Token ids and every size the model computes with fit an int32 (token ids
// cross the worker protocol as int32; products of sizes stay far from int64's
// limit). A config beyond that is damaged, not a model.
constexpr int64_t kMaxSize = std::numeric_limits<int32_t>::max();

absl::Status FieldError(absl::string_view file, absl::string_view field,
                        absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(file, ": field '", field, "': ", problem));
}

// Reads an integer field; `required` fields must be present and > 0.
absl::Status ReadPositive(const json& j, absl::string_view file,
                          const char* field, bool required, int64_t* out) {
  if (!j.contains(field) || j[field].is_null()) {
    return required ? FieldError(file, field, "missing") : absl::OkStatus();
  }
  if (!j[field].is_number_integer() || j[field].get<int64_t>() <= 0) {
    return FieldError(file, field, "must be a positive integer");
  }
  if (j[field].get<int64_t>() > kMaxSize) {
    return FieldError(file, field, absl::StrCat("must be at most ", kMaxSize));
  }
  *out = j[field].get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadNumber(const json& j, absl::string_view file, const char* field,
                        double* out) {
  if (!j.contains(field) || j[field].is_null()) return absl::OkStatus();
  if (!j[field].is_number() || !(j[field].get<double>() > 0) ||
      !std::isfinite(j[field].get<double>())) {
    return FieldError(file, field, "must be a positive number");
  }
  *out = j[field].get<double>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& j, absl::string_view file, const char* field,
                      bool* out) {
  if (!j.contains(field) || j[field].is_null()) return absl::OkStatus();
  if (!j[field].is_boolean()) return FieldError(file, field, "must be a boolean");
  *out = j[field].get<bool>();
  return absl::OkStatus();
}

// eos_token_id: an integer or a list of integers; appended without duplicates.
absl::Status ReadTokenIds(const json& j, absl::string_view file,
                          const char* field, std::vector<int32_t>* out) {
  if (!j.contains(field) || j[field].is_null()) return absl::OkStatus();
  const json& value = j[field];
  std::vector<json> items =
      value.is_array() ? value.get<std::vector<json>>() : std::vector<json>{value};
  for (const json& item : items) {
    if (!item.is_number_integer() || item.get<int64_t>() < 0 ||
        item.get<int64_t>() >= kMaxSize) {
      return FieldError(file, field, "must be a token id or a list of them");
    }
    const auto id = static_cast<int32_t>(item.get<int64_t>());
    if (std::find(out->begin(), out->end(), id) == out->end()) out->push_back(id);
  }
  return absl::OkStatus();
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5).
absl::Status ReadRope(const json& j, LlamaConfig* config) {
  constexpr absl::string_view kFile = "config.json";
  const char* key = j.contains("rope_parameters") ? "rope_parameters"
                                                  : "rope_scaling";
  if (absl::Status s = ReadNumber(j, kFile, "rope_theta", &config->rope_theta);
      !s.ok()) {
    return s;
  }
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  const json& rope = j[key];
  if (!rope.is_object()) return FieldError(kFile, key, "must be an object");
  if (absl::Status s = ReadNumber(rope, kFile, "rope_theta", &config->rope_theta);
      !s.ok()) {
    return s;
  }
  const char* type_key = rope.contains("rope_type") ? "rope_type" : "type";
  if (rope.contains(type_key) && !rope[type_key].is_string()) {
    return FieldError(kFile, absl::StrCat(key, ".", type_key), "must be a string");
  }
  const std::string type =
      rope.contains(type_key) ? rope[type_key].get<std::string>() : "default";
  RopeScaling& scaling = config->rope_scaling;
  if (type == "default") return absl::OkStatus();
  if (type == "linear") {
    scaling.type = RopeScalingType::kLinear;
  } else if (type == "llama3") {
    scaling.type = RopeScalingType::kLlama3;
  } else {
    return FieldError(kFile, absl::StrCat(key, ".rope_type"),
                      absl::StrCat("unsupported value '", type,
                                   "' (supported: default, linear, llama3)"));
  }
  const std::string field = absl::StrCat(key, ".factor");
  if (!rope.contains("factor")) return FieldError(kFile, field, "missing");
  for (absl::Status s :
       {ReadNumber(rope, kFile, "factor", &scaling.factor),
        ReadNumber(rope, kFile, "low_freq_factor", &scaling.low_freq_factor),
        ReadNumber(rope, kFile, "high_freq_factor", &scaling.high_freq_factor),
        ReadPositive(rope, kFile, "original_max_position_embeddings", false,
                     &scaling.original_max_position_embeddings)}) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// The model types LlamaModel serves: decoders whose forward pass is LLaMa's,
// differing only in the facts read here (as vLLM maps MistralForCausalLM to
// its LLaMa code). To add one: a branch below, a test-model variant in
// tools/make_test_models.py and its parity case in tests/model_parity_test.py.
// A family whose forward pass differs (extra norms, embedding scale, partial
// rotary) needs its own model code instead.
absl::Status ReadFamily(const json& j, LlamaConfig* c) {
  constexpr absl::string_view kFile = "config.json";
  if (j.contains("model_type")) {
    if (!j["model_type"].is_string()) return FieldError(kFile, "model_type", "must be a string");
    c->model_type = j["model_type"].get<std::string>();
  }
  if (c->model_type == "llama") {  // attention_bias covers q, k, v and o.
    bool bias = false;
    if (absl::Status s = ReadBool(j, kFile, "attention_bias", &bias); !s.ok()) return s;
    c->qkv_bias = c->o_bias = bias;
  } else if (c->model_type == "qwen2") {  // Biases on q, k and v only.
    c->qkv_bias = true;
    bool sliding = false;
    if (absl::Status s = ReadBool(j, kFile, "use_sliding_window", &sliding); !s.ok()) return s;
    if (sliding) return FieldError(kFile, "use_sliding_window", "true is not supported");
  } else if (c->model_type == "mistral") {  // No biases; no sliding window.
    int64_t window = 0;
    if (absl::Status s = ReadPositive(j, kFile, "sliding_window", false, &window); !s.ok()) {
      return s;
    }
    if (window > 0 && window < c->max_position_embeddings) {
      return FieldError(kFile, "sliding_window",
                        absl::StrCat(window, " is shorter than max_position_embeddings ",
                                     c->max_position_embeddings,
                                     ": sliding-window attention is not supported"));
    }
  } else {
    return FieldError(kFile, "model_type",
                      absl::StrCat("unsupported value ", j["model_type"].dump(),
                                   " (supported: \"llama\", \"mistral\", \"qwen2\")"));
  }
  return absl::OkStatus();
}

absl::Status CheckActivation(const json& j) {
  constexpr absl::string_view kFile = "config.json";
  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    return FieldError(kFile, "hidden_act",
                      absl::StrCat("unsupported value ", j["hidden_act"].dump(),
                                   " (supported: \"silu\")"));
  }
  return absl::OkStatus();
}

absl::Status ReadShapes(const json& j, LlamaConfig* c) {
  constexpr absl::string_view kFile = "config.json";
  for (absl::Status s :
       {ReadPositive(j, kFile, "hidden_size", true, &c->hidden_size),
        ReadPositive(j, kFile, "intermediate_size", true, &c->intermediate_size),
        ReadPositive(j, kFile, "num_hidden_layers", true, &c->num_layers),
        ReadPositive(j, kFile, "num_attention_heads", true, &c->num_heads),
        ReadPositive(j, kFile, "vocab_size", true, &c->vocab_size),
        ReadPositive(j, kFile, "max_position_embeddings", true,
                     &c->max_position_embeddings)}) {
    if (!s.ok()) return s;
  }
  c->num_kv_heads = c->num_heads;
  c->head_dim = c->hidden_size / c->num_heads;
  for (absl::Status s :
       {ReadPositive(j, kFile, "num_key_value_heads", false, &c->num_kv_heads),
        ReadPositive(j, kFile, "head_dim", false, &c->head_dim)}) {
    if (!s.ok()) return s;
  }
  if (!j.contains("head_dim") && c->hidden_size % c->num_heads != 0) {
    return FieldError(kFile, "num_attention_heads", "must divide hidden_size");
  }
  if (c->num_heads % c->num_kv_heads != 0) {
    return FieldError(kFile, "num_key_value_heads",
                      "must divide num_attention_heads");
  }
  if (c->head_dim % 2 != 0) return FieldError(kFile, "head_dim", "must be even");
  if (c->num_heads * c->head_dim > kMaxSize) {
    return FieldError(kFile, "head_dim",
                      absl::StrCat("num_attention_heads * head_dim must be at most ", kMaxSize));
  }
  return absl::OkStatus();
}

// Special ids the sampler indexes logits with: inside the vocabulary.
absl::Status CheckTokenIds(const LlamaConfig& c, absl::string_view file) {
  for (int32_t id : c.eos_token_ids) {
    if (id >= c.vocab_size) {
      return FieldError(file, "eos_token_id",
                        absl::StrCat("token id ", id, " is outside the vocabulary (vocab_size ",
                                     c.vocab_size, ")"));
    }
  }
  if (c.bos_token_id >= c.vocab_size) {
    return FieldError(file, "bos_token_id",
                      absl::StrCat("token id ", c.bos_token_id,
                                   " is outside the vocabulary (vocab_size ", c.vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<json> ParseJson(std::string_view text, absl::string_view file) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": not a JSON object"));
  }
  return j;
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

absl::StatusOr<LlamaConfig> ParseLlamaConfig(
    std::string_view config_json, std::string_view generation_config_json) {
  constexpr absl::string_view kFile = "config.json";
  auto j = ParseJson(config_json, kFile);
  if (!j.ok()) return j.status();
  LlamaConfig c;
  for (absl::Status s :
       {CheckActivation(*j), ReadShapes(*j, &c), ReadFamily(*j, &c), ReadRope(*j, &c),
        ReadBool(*j, kFile, "tie_word_embeddings", &c.tie_word_embeddings),
        ReadBool(*j, kFile, "mlp_bias", &c.mlp_bias),
        ReadTokenIds(*j, kFile, "eos_token_id", &c.eos_token_ids)}) {
    if (!s.ok()) return s;
  }
  if (!j->contains("rms_norm_eps")) return FieldError(kFile, "rms_norm_eps", "missing");
  if (absl::Status s = ReadNumber(*j, kFile, "rms_norm_eps", &c.rms_norm_eps);
      !s.ok()) {
    return s;
  }
  std::vector<int32_t> bos;
  if (absl::Status s = ReadTokenIds(*j, kFile, "bos_token_id", &bos); !s.ok()) {
    return s;
  }
  if (!bos.empty()) c.bos_token_id = bos.front();
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (j->contains(key) && (*j)[key].is_string()) c.torch_dtype = (*j)[key];
  }
  if (absl::Status s = CheckTokenIds(c, kFile); !s.ok()) return s;
  if (!generation_config_json.empty()) {
    constexpr absl::string_view kGen = "generation_config.json";
    auto g = ParseJson(generation_config_json, kGen);
    if (!g.ok()) return g.status();
    if (absl::Status s = ReadTokenIds(*g, kGen, "eos_token_id", &c.eos_token_ids);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckTokenIds(c, kGen); !s.ok()) return s;
  }
  return c;
}

absl::StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  auto config_text = ReadFile(dir / "config.json");
  if (!config_text.ok()) return config_text.status();
  std::string generation_text;
  if (fs::exists(dir / "generation_config.json")) {
    auto text = ReadFile(dir / "generation_config.json");
    if (!text.ok()) return text.status();
    generation_text = *std::move(text);
  }
  auto config = ParseLlamaConfig(*config_text, generation_text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(model_dir, "/", config.status().message()));
  }
  return config;
}

}  // namespace fms
