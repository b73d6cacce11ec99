#include "server/validation.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace fms {
namespace {

fmaas::Parameters Parse(const std::string& text) {
  fmaas::Parameters params;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &params)) << text;
  return params;
}

const ValidationLimits kLimits{.max_new_tokens = 100, .max_sequence_length = 64};

TEST(Validation, DefaultsWithoutParameters) {
  auto r = ResolveParameters(nullptr, kLimits);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->sampling.sample);
  EXPECT_EQ(r->max_new_tokens, 20u);
  EXPECT_EQ(r->sampling.repetition_penalty, 1.0f);
  EXPECT_TRUE(r->include_stop_sequence);
}

TEST(Validation, GreedyIgnoresSamplingFields) {
  auto r = ResolveParameters(
      &*std::make_unique<fmaas::Parameters>(
          Parse("method: GREEDY sampling { temperature: 0.01 top_p: 7 top_k: 4294967295 }")),
      kLimits);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->sampling.sample);
}

TEST(Validation, SampleDefaults) {
  const auto p = Parse("method: SAMPLE stopping { max_new_tokens: 0 include_stop_sequence: false }");
  auto r = ResolveParameters(&p, kLimits);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->sampling.sample);
  EXPECT_EQ(r->sampling.temperature, 1.0f);  // 0 means 1.0
  EXPECT_EQ(r->sampling.top_p, 1.0f);        // 0 means disabled
  EXPECT_FALSE(r->seed_given);
  EXPECT_EQ(r->max_new_tokens, 20u);         // 0 means 20
  EXPECT_FALSE(r->include_stop_sequence);
  const auto seeded = Parse("method: SAMPLE sampling { seed: 0 temperature: 0.7 }");
  r = ResolveParameters(&seeded, kLimits);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->seed_given);  // An explicit 0 is a seed.
  EXPECT_FLOAT_EQ(r->sampling.temperature, 0.7f);
}

struct Rule {
  std::string params;  // Text format.
  std::string message;
};

// One row per TGIS rule (tgis-api.md 2.1) and per stricter check of ours.
TEST(Validation, EveryRuleWithTgisMessage) {
  const std::string long_stop(241, 'x');
  const std::vector<Rule> rules = {
      {"method: SAMPLE sampling { temperature: 0.01 }", "temperature must be >= 0.05"},
      {"method: SAMPLE sampling { temperature: -1 }", "temperature must be >= 0.05"},
      {"method: SAMPLE sampling { top_p: 1.5 }", "top_p must be > 0.0 and <= 1.0"},
      {"method: SAMPLE sampling { top_p: -0.5 }", "top_p must be > 0.0 and <= 1.0"},
      {"method: SAMPLE sampling { typical_p: 1.5 }", "typical_p must be <= 1.0"},
      {"method: SAMPLE sampling { top_k: 2147483648 }", "top_k must be strictly positive"},
      {"stopping { max_new_tokens: 101 }", "max_new_tokens must be <= 100"},
      {"stopping { min_new_tokens: 21 }", "min_new_tokens must be <= max_new_tokens"},
      {"decoding { repetition_penalty: -1 }", "repetition_penalty must be > 0.0"},
      {"decoding { length_penalty { } }", "length_penalty must be >= 1.0 and <= 10.0"},
      {"decoding { length_penalty { decay_factor: 11 } }",
       "length_penalty must be >= 1.0 and <= 10.0"},
      {"stopping { stop_sequences: ['a', 'b', 'c', 'd', 'e', 'f', 'g'] }",
       "can specify at most 6 non-empty stop sequences, each not more than 240 UTF8 bytes"},
      {"response { token_logprobs: true }",
       "must request input and/or generated tokens to request extra token detail"},
      {"response { top_n_tokens: 2 }",
       "must request input and/or generated tokens to request extra token detail"},
      {"stopping { stop_sequences: [''] }",
       "can specify at most 6 non-empty stop sequences, each not more than 240 UTF8 bytes"},
      {"stopping { stop_sequences: ['" + long_stop + "'] }",
       "can specify at most 6 non-empty stop sequences, each not more than 240 UTF8 bytes"},
      // Stricter than TGIS:
      {"method: SAMPLE sampling { temperature: nan }", "temperature must be a finite number"},
      {"method: GREEDY sampling { top_p: inf }", "top_p must be a finite number"},
      {"decoding { repetition_penalty: nan }", "repetition_penalty must be a finite number"},
      {"method: 7", "unknown decoding method 7"},
      {"decoding { regex: 'a+' }", "guided decoding is not supported by this server"},
  };
  for (const Rule& rule : rules) {
    const fmaas::Parameters p = Parse(rule.params);
    auto r = ResolveParameters(&p, kLimits);
    ASSERT_FALSE(r.ok()) << rule.params;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), rule.message) << rule.params;
  }
}

TEST(Validation, RulesApplyInTgisOrder) {
  // Both temperature and max_new_tokens are wrong: temperature is first.
  const auto p = Parse("method: SAMPLE sampling { temperature: 0.01 } stopping { max_new_tokens: 999 }");
  EXPECT_EQ(ResolveParameters(&p, kLimits).status().message(), "temperature must be >= 0.05");
}

TEST(Validation, InputLengthRules) {
  EXPECT_TRUE(ValidateInputLength(63, 0, 1, 64).ok());  // input + min == max: accepted
  EXPECT_EQ(ValidateInputLength(64, 0, 0, 64).message(),
            "input tokens (64) plus prefix length (0) must be < 64");
  EXPECT_EQ(ValidateInputLength(60, 0, 5, 64).message(),
            "input tokens (60) plus prefix length (0) plus min_new_tokens (5) must be <= 64");
  // A prompt-tuning adapter's virtual tokens count, as TGIS's prefix length.
  EXPECT_EQ(ValidateInputLength(56, 8, 0, 64).message(),
            "input tokens (56) plus prefix length (8) must be < 64");
  EXPECT_EQ(ValidateInputLength(50, 8, 7, 64).message(),
            "input tokens (50) plus prefix length (8) plus min_new_tokens (7) must be <= 64");
  EXPECT_TRUE(ValidateInputLength(50, 8, 6, 64).ok());
  // Found by tests/fuzz/request_fuzz: an empty text on a tokenizer without
  // BOS reached the scheduler, which refused it as RESOURCE_EXHAUSTED.
  EXPECT_EQ(ValidateInputLength(0, 0, 0, 64).message(),
            "the input text has no tokens (empty, and the tokenizer adds no BOS token)");
}

}  // namespace
}  // namespace fms
