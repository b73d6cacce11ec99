#include "model/adapter_config.h"

#include <cmath>

#include "gtest/gtest.h"

namespace fms {
namespace {

TEST(AdapterConfigTest, LoraWithItsScale) {
  auto c = ParseAdapterConfig(
      R"({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "use_dora": false,
          "bias": "none", "rank_pattern": {}, "modules_to_save": null,
          "target_modules": ["q_proj", "v_proj"]})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, AdapterKind::kLora);
  EXPECT_EQ(c->rank, 16);
  EXPECT_DOUBLE_EQ(c->LoraScale(), 2.0);
}

TEST(AdapterConfigTest, RsLoraScalesBySquareRoot) {
  auto c = ParseAdapterConfig(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                  "use_rslora": true})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->LoraScale(), 4.0);
}

TEST(AdapterConfigTest, PromptTuningNeedsItsVirtualTokens) {
  auto c = ParseAdapterConfig(R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, AdapterKind::kPromptTuning);
  EXPECT_EQ(c->num_virtual_tokens, 8);
  EXPECT_EQ(ParseAdapterConfig(R"({"peft_type": "PROMPT_TUNING"})").status().message(),
            "adapter_config.json: num_virtual_tokens must be a positive integer");
}

TEST(AdapterConfigTest, OtherTypesAreNamedNotRefusedHere) {
  auto c = ParseAdapterConfig(R"({"peft_type": "IA3"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, AdapterKind::kUnsupported);
  EXPECT_EQ(c->peft_type, "IA3");
}

TEST(AdapterConfigTest, WhatIsNotAppliedIsRefusedByField) {
  EXPECT_EQ(ParseAdapterConfig(R"({"peft_type": "LORA", "r": 8, "use_dora": true})")
                .status().message(),
            "adapter_config.json: use_dora is not supported");
  EXPECT_EQ(ParseAdapterConfig(R"({"peft_type": "LORA", "r": 8, "bias": "all"})")
                .status().message(),
            "adapter_config.json: bias must be \"none\"");
  EXPECT_EQ(ParseAdapterConfig(R"({"peft_type": "LORA", "r": 8,
                                   "rank_pattern": {"q_proj": 4}})").status().message(),
            "adapter_config.json: rank_pattern is not supported");
  EXPECT_EQ(ParseAdapterConfig(R"({"peft_type": "LORA", "r": 0})").status().message(),
            "adapter_config.json: r must be a positive integer");
  EXPECT_FALSE(ParseAdapterConfig("[1]").ok());
  EXPECT_FALSE(ParseAdapterConfig("{").ok());
  EXPECT_FALSE(ParseAdapterConfig(R"({"r": 8})").ok());
}

}  // namespace
}  // namespace fms
