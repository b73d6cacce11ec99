#include "model/llama_config.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fms {
namespace {

constexpr char kTinyLlama[] = R"({
  "model_type": "llama", "hidden_act": "silu", "hidden_size": 2048,
  "intermediate_size": 5632, "num_hidden_layers": 22,
  "num_attention_heads": 32, "num_key_value_heads": 4,
  "max_position_embeddings": 2048, "rms_norm_eps": 1e-05,
  "vocab_size": 32000, "bos_token_id": 1, "eos_token_id": 2,
  "torch_dtype": "bfloat16"})";

TEST(LlamaConfig, ReadsTransformers4Layout) {
  auto config = ParseLlamaConfig(kTinyLlama, "");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->hidden_size, 2048);
  EXPECT_EQ(config->num_heads, 32);
  EXPECT_EQ(config->num_kv_heads, 4);
  EXPECT_EQ(config->head_dim, 64);  // hidden_size / num_heads
  EXPECT_EQ(config->num_layers, 22);
  EXPECT_DOUBLE_EQ(config->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(config->rope_theta, 10000.0);  // absent: the default
  EXPECT_EQ(config->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_EQ(config->eos_token_ids, std::vector<int32_t>{2});
  EXPECT_EQ(config->torch_dtype, "bfloat16");
}

TEST(LlamaConfig, ReadsLlama31RopeScalingAndEosLists) {
  auto config = ParseLlamaConfig(R"({
      "hidden_size": 4096, "intermediate_size": 14336,
      "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 8, "max_position_embeddings": 131072,
      "rms_norm_eps": 1e-05, "vocab_size": 128256, "rope_theta": 500000.0,
      "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192,
                       "rope_type": "llama3"},
      "tie_word_embeddings": false, "bos_token_id": 128000,
      "eos_token_id": [128001, 128008]})",
                                 R"({"eos_token_id": [128001, 128008, 128009]})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(config->rope_scaling.factor, 8.0);
  EXPECT_EQ(config->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(config->rope_theta, 500000.0);
  EXPECT_EQ(config->eos_token_ids,
            (std::vector<int32_t>{128001, 128008, 128009}));
}

TEST(LlamaConfig, ReadsTransformers5RopeParameters) {
  auto config = ParseLlamaConfig(R"({
      "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
      "num_attention_heads": 4, "head_dim": 32, "max_position_embeddings": 256,
      "rms_norm_eps": 1e-06, "vocab_size": 300, "tie_word_embeddings": true,
      "rope_parameters": {"rope_theta": 100000.0, "rope_type": "linear",
                          "factor": 2.0}})",
                                 "");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim, 32);  // explicit head_dim wins
  EXPECT_DOUBLE_EQ(config->rope_theta, 100000.0);
  EXPECT_EQ(config->rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_DOUBLE_EQ(config->rope_scaling.factor, 2.0);
  EXPECT_TRUE(config->tie_word_embeddings);
}

struct BadCase {
  std::string patch;  // Replaces the closing brace of kTinyLlama.
  std::string message;
};

TEST(LlamaConfig, ErrorsNameTheFileAndTheField) {
  std::string base = kTinyLlama;
  base.pop_back();
  const std::vector<BadCase> cases = {
      {R"(, "num_attention_heads": 0})", "field 'num_attention_heads': must be a positive integer"},
      {R"(, "num_key_value_heads": 3})", "field 'num_key_value_heads': must divide"},
      {R"(, "hidden_act": "gelu"})", "field 'hidden_act': unsupported value \"gelu\""},
      {R"(, "model_type": "gemma"})",
       "field 'model_type': unsupported value \"gemma\" (supported: \"llama\", \"mistral\", \"qwen2\")"},
      {R"(, "model_type": "mistral", "sliding_window": 1024})",
       "field 'sliding_window': 1024 is shorter than max_position_embeddings 2048"},
      {R"(, "model_type": "qwen2", "use_sliding_window": true})",
       "field 'use_sliding_window': true is not supported"},
      {R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})",
       "field 'rope_scaling.rope_type': unsupported value 'yarn'"},
      {R"(, "rope_scaling": {"rope_type": "llama3"}})", "field 'rope_scaling.factor': missing"},
      {R"(, "eos_token_id": "two"})", "field 'eos_token_id': must be a token id"},
      {R"(, "tie_word_embeddings": "yes"})", "field 'tie_word_embeddings': must be a boolean"},
      {R"(, "vocab_size": 1.5})", "field 'vocab_size': must be a positive integer"},
      // Found by tests/fuzz/llama_config_fuzz: ids and sizes beyond int32
      // wrapped or overflowed, ids beyond the vocabulary reached the sampler.
      {R"(, "eos_token_id": 4294967298})", "field 'eos_token_id': must be a token id"},
      {R"(, "eos_token_id": [2, 32000]})",
       "field 'eos_token_id': token id 32000 is outside the vocabulary (vocab_size 32000)"},
      {R"(, "vocab_size": 100000000000})", "field 'vocab_size': must be at most 2147483647"},
      {R"(, "head_dim": 2147483646})",
       "field 'head_dim': num_attention_heads * head_dim must be at most 2147483647"},
  };
  for (const BadCase& c : cases) {
    auto config = ParseLlamaConfig(base + c.patch, "");
    ASSERT_FALSE(config.ok()) << c.patch;
    EXPECT_NE(config.status().message().find("config.json: " + c.message),
              std::string::npos)
        << config.status().message();
  }
}

TEST(LlamaConfig, LlamaFamilyVariantsAreData) {
  std::string base = kTinyLlama;
  base.pop_back();
  auto llama = ParseLlamaConfig(base + R"(, "attention_bias": true})", "");
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_TRUE(llama->qkv_bias && llama->o_bias);
  auto qwen2 = ParseLlamaConfig(
      base + R"(, "model_type": "qwen2", "use_sliding_window": false, "sliding_window": 4096})",
      "");
  ASSERT_TRUE(qwen2.ok()) << qwen2.status();
  EXPECT_EQ(qwen2->model_type, "qwen2");
  EXPECT_TRUE(qwen2->qkv_bias);
  EXPECT_FALSE(qwen2->o_bias);
  // Mistral v0.2+: no window; a window as long as the context never applies.
  for (const char* window : {R"(null)", R"(2048)"}) {
    auto mistral =
        ParseLlamaConfig(base + R"(, "model_type": "mistral", "sliding_window": )" + window + "}",
                         "");
    ASSERT_TRUE(mistral.ok()) << mistral.status();
    EXPECT_FALSE(mistral->qkv_bias || mistral->o_bias);
  }
}

TEST(LlamaConfig, MissingFieldsAndBrokenJson) {
  auto no_eps = ParseLlamaConfig(R"({"hidden_size": 64, "intermediate_size": 8,
      "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 10,
      "max_position_embeddings": 16})",
                                 "");
  EXPECT_EQ(no_eps.status().message(),
            "config.json: field 'rms_norm_eps': missing");
  auto no_layers = ParseLlamaConfig(R"({"hidden_size": 64})", "");
  EXPECT_NE(no_layers.status().message().find("'intermediate_size': missing"),
            std::string::npos);
  EXPECT_EQ(ParseLlamaConfig("{not json", "").status().message(),
            "config.json: not a JSON object");
  EXPECT_EQ(ParseLlamaConfig(kTinyLlama, "[1]").status().message(),
            "generation_config.json: not a JSON object");
}

TEST(LlamaConfig, LoadNamesTheDirectory) {
  auto config = LoadLlamaConfig("/nonexistent/model");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("/nonexistent/model/config.json"),
            std::string::npos);
}

}  // namespace
}  // namespace fms
