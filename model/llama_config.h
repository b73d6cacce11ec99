// The LLaMa hyper-parameters a worker needs, read from a Hugging Face model
// directory: config.json (transformers 4 and 5 layouts) and the optional
// generation_config.json (extra EOS ids). Errors name the file and the field.

#ifndef FMS_MODEL_LLAMA_CONFIG_H_
#define FMS_MODEL_LLAMA_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fms {

enum class RopeScalingType {
  kNone,    // rope_type "default" or no scaling.
  kLinear,  // Positions divided by `factor`.
  kLlama3,  // LLaMa 3.1 frequency-band scaling.
};

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  // kLlama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // num_key_value_heads; absent means num_heads.
  int64_t head_dim = 0;      // Absent means hidden_size / num_heads.
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 0;  // Required: never defaulted.
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  // LLaMa-family variants as data (model_type; see ReadFamily in
  // llama_config.cc, where a new model type goes).
  std::string model_type = "llama";
  bool qkv_bias = false;  // q, k and v projections have biases (Qwen2).
  bool o_bias = false;    // The output projection has one.
  bool mlp_bias = false;
  int32_t bos_token_id = -1;           // -1 when absent.
  std::vector<int32_t> eos_token_ids;  // config.json and generation_config.json.
  std::string torch_dtype;             // As stored ("bfloat16"), may be empty.
};

// Parses config.json text; `generation_config_json` may be empty.
absl::StatusOr<LlamaConfig> ParseLlamaConfig(
    std::string_view config_json, std::string_view generation_config_json);

// Reads `model_dir`/config.json and generation_config.json.
absl::StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir);

}  // namespace fms

#endif  // FMS_MODEL_LLAMA_CONFIG_H_
