#include "model/sampling.h"

#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace fms {
namespace {

const std::vector<int32_t> kNoEos;

std::vector<TokenChoice> SampleOne(const std::vector<float>& logits,
                                   const SamplingParams& params,
                                   const std::vector<int32_t>& prompt = {},
                                   const std::vector<int32_t>& generated = {},
                                   const std::vector<int32_t>& eos = kNoEos) {
  const SamplingInput input{&params, prompt, generated};
  return SampleTokens(at::tensor(logits).unsqueeze(0), {&input, 1}, eos);
}

TEST(Sampling, GreedyIsArgmaxWithLogprobAndRank) {
  SamplingParams p{.logprobs = true, .ranks = true};
  const auto choice = SampleOne({1.0f, 3.0f, 2.0f}, p)[0];
  EXPECT_EQ(choice.token, 1);
  EXPECT_EQ(choice.details.rank, 1u);
  const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(choice.details.logprob, 3.0 - std::log(z), 1e-6);
}

TEST(Sampling, GreedyTakesTheFirstOfTiedMaximaInEveryRowAsArgmax) {
  const SamplingParams p;
  const std::vector<SamplingInput> inputs(3, SamplingInput{&p, {}, {}});
  const at::Tensor logits = at::tensor({2.0f, 5.0f, 5.0f, 1.0f,     // Tie: the first.
                                        -7.0f, -7.0f, -7.0f, -7.0f,  // All equal: 0.
                                        0.0f, 1.0f, 0.5f, 3.0f}).view({3, 4});
  const auto choices = SampleTokens(logits, inputs, kNoEos);
  const at::Tensor expected = logits.argmax(-1);
  for (int64_t b = 0; b < 3; ++b) EXPECT_EQ(choices[b].token, expected[b].item<int64_t>());
  EXPECT_EQ(choices[0].token, 1);
  // A transposed bf16 view: the copy to fp32 keeps its strides.
  const at::Tensor columns = logits.t().contiguous().to(at::kBFloat16).t();  // [3, 4]
  ASSERT_FALSE(columns.is_contiguous());
  const auto again = SampleTokens(columns, inputs, kNoEos);
  for (int64_t b = 0; b < 3; ++b) EXPECT_EQ(again[b].token, choices[b].token);
}

TEST(Sampling, NonFiniteRowsFlagsNanAndInfinities) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  at::Tensor logits = at::zeros({5, 1000});  // [B, vocab]
  logits[1][999] = nan;
  logits[2][0] = inf;
  logits[3][500] = -inf;
  logits[4][17] = std::numeric_limits<float>::max();  // Finite.
  EXPECT_EQ(NonFiniteRows(logits), (std::vector<bool>{false, true, true, true, false}));
  EXPECT_EQ(NonFiniteRows(logits.to(at::kBFloat16)),
            (std::vector<bool>{false, true, true, true, true}));  // max overflows bf16.
}

TEST(Sampling, MinNewTokensMasksEveryEosId) {
  SamplingParams p{.min_new_tokens = 2};
  const std::vector<int32_t> eos = {0, 3};
  EXPECT_EQ(SampleOne({9, 1, 2, 8}, p, {}, {5}, eos)[0].token, 2);
  EXPECT_EQ(SampleOne({9, 1, 2, 8}, p, {}, {5, 6}, eos)[0].token, 0);
}

TEST(Sampling, RepetitionPenaltyFollowsTransformers) {
  // Seen tokens 0 (score 4 -> 2) and 2 (score -1 -> -2); 1 keeps 3.
  SamplingParams p{.repetition_penalty = 2.0f, .logprobs = true, .ranks = true};
  const auto choice = SampleOne({4, 3, -1}, p, {0}, {2})[0];
  EXPECT_EQ(choice.token, 1);
  const double z = std::exp(2.0) + std::exp(3.0) + std::exp(-2.0);
  EXPECT_NEAR(choice.details.logprob, 3.0 - std::log(z), 1e-6);
}

TEST(Sampling, LengthPenaltyBoostsEosExponentially) {
  // generated - start = 3 past tokens: e + |e| * (2^3 - 1) = 1 + 7 = 8 > 5.
  SamplingParams p{.length_penalty_start = 2, .length_penalty_decay = 2.0f};
  const std::vector<int32_t> eos = {0};
  EXPECT_EQ(SampleOne({1, 5}, p, {}, {7, 7, 7, 7}, eos)[0].token, 1);  // 2^2-1: 4
  EXPECT_EQ(SampleOne({1, 5}, p, {}, {7, 7, 7, 7, 7}, eos)[0].token, 0);
}

TEST(Sampling, TopKOneIsGreedyWithLogprobZero) {
  SamplingParams p{.sample = true, .top_k = 1, .seed = 5, .logprobs = true};
  for (uint64_t seed = 0; seed < 20; ++seed) {
    p.seed = seed;
    const auto choice = SampleOne({0.5f, 0.7f, 0.6f}, p)[0];
    EXPECT_EQ(choice.token, 1);
    EXPECT_FLOAT_EQ(choice.details.logprob, 0.0f);
  }
}

// Draws `n` tokens with different seeds; returns their frequencies.
std::map<int32_t, double> Frequencies(const std::vector<float>& logits,
                                      SamplingParams p, int n) {
  std::map<int32_t, double> counts;
  for (int i = 0; i < n; ++i) {
    p.seed = static_cast<uint64_t>(i);
    counts[SampleOne(logits, p)[0].token] += 1.0 / n;
  }
  return counts;
}

TEST(Sampling, DrawsFollowTheWarpedDistribution) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f),
                                     std::log(0.15f), std::log(0.05f)};
  auto plain = Frequencies(logits, {.sample = true}, 4000);
  EXPECT_NEAR(plain[0], 0.5, 0.03);
  EXPECT_NEAR(plain[1], 0.3, 0.03);
  EXPECT_NEAR(plain[3], 0.05, 0.015);
  // top_p 0.7: 0.5 + 0.3 covers it; tokens 2 and 3 are cut; 0 : 1 = 5 : 3.
  auto top_p = Frequencies(logits, {.sample = true, .top_p = 0.7f}, 4000);
  EXPECT_EQ(top_p.count(2) + top_p.count(3), 0u);
  EXPECT_NEAR(top_p[0], 0.625, 0.03);
  // top_k 3 drops token 3; temperature 100 flattens the rest.
  auto flat = Frequencies(logits, {.sample = true, .temperature = 100.f, .top_k = 3}, 3000);
  EXPECT_EQ(flat.count(3), 0u);
  EXPECT_NEAR(flat[2], 1.0 / 3, 0.04);
}

TEST(Sampling, TypicalPKeepsTheTokensClosestToTheEntropy) {
  // Entropy of (0.5, 0.3, 0.15, 0.05) is 1.1468 nats; |-log p - H|:
  // 0.45, 0.06, 0.75, 1.85 -> typical order 1, 0, 2, 3. Mass 0.5: {1, 0}.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f),
                                     std::log(0.15f), std::log(0.05f)};
  auto typical = Frequencies(logits, {.sample = true, .typical_p = 0.5f}, 2000);
  EXPECT_EQ(typical.count(2) + typical.count(3), 0u);
  EXPECT_NEAR(typical[0], 0.625, 0.04);
}

TEST(Sampling, SeededDrawDependsOnlyOnSeedAndStep) {
  at::manual_seed(0);
  const at::Tensor logits = at::randn({5, 50});
  std::vector<SamplingParams> params(5);
  for (int i = 0; i < 5; ++i) {
    params[i] = {.sample = true, .temperature = 0.8f + 0.1f * i, .top_k = 10 * i,
                 .seed = 1000u + i};
  }
  const std::vector<int32_t> generated = {3, 4, 5};
  std::vector<SamplingInput> inputs;
  for (auto& p : params) inputs.push_back({&p, {}, generated});
  const auto batch = SampleTokens(logits, inputs, kNoEos);
  for (int i = 0; i < 5; ++i) {
    const auto alone = SampleTokens(logits.narrow(0, i, 1), {&inputs[i], 1}, kNoEos);
    EXPECT_EQ(alone[0].token, batch[i].token) << i;
  }
  EXPECT_NE(SampleUniform(1, 0), SampleUniform(1, 1));
  EXPECT_NE(SampleUniform(1, 0), SampleUniform(2, 0));
  EXPECT_EQ(SampleUniform(7, 3), SampleUniform(7, 3));
}

TEST(Sampling, TopTokensTieRules) {
  const at::Tensor scores = at::tensor({1.0f, 3.0f, 3.0f, 2.0f, 3.0f});
  // n = 1: every token tied with the best, capped at 4n = 4; by id order.
  auto top = TopTokens(scores, 1, /*logprobs=*/false);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0], std::make_pair(1, 0.0f));
  EXPECT_EQ(top[2].first, 4);
  // n = 2 with logprobs: >= second best (3.0) -> the three tied tokens.
  top = TopTokens(scores, 2, true);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].first, 1);  // ties keep lower ids first
  EXPECT_LT(top[0].second, 0.0f);
  // -inf scores are never candidates.
  const float inf = std::numeric_limits<float>::infinity();
  top = TopTokens(at::tensor({-inf, 0.5f, -inf}), 2, true);
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].first, 1);
  // Cap at 4n.
  EXPECT_EQ(TopTokens(at::zeros({20}), 2, false).size(), 8u);
}

TEST(Sampling, RankCountsStrictlyHigherScores) {
  SamplingParams p{.sample = true, .seed = 3, .ranks = true, .top_n = 2};
  // Token 0 is drawn only when the uniform falls in its mass; find a seed.
  const std::vector<float> logits = {0.0f, 1.0f, 1.0f};
  for (uint64_t seed = 0; seed < 50; ++seed) {
    p.seed = seed;
    const auto choice = SampleOne(logits, p)[0];
    EXPECT_EQ(choice.details.rank, choice.token == 0 ? 3u : 1u);
    EXPECT_EQ(choice.details.top.size(), 2u);
  }
}

}  // namespace
}  // namespace fms
