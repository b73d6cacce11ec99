#include "batching/step_cost.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace fms {
namespace {

// A machine whose step costs 10 ms, 3 ms a decode and 0.5 ms a prompt token.
double Truth(int64_t decodes, int64_t prompt_tokens) {
  return 0.010 + 0.003 * decodes + 0.0005 * prompt_tokens;
}

TEST(StepCost, NoLimitUntilBothCostsAreKnownOrWithoutDecodes) {
  StepCost cost(2.0);
  EXPECT_FALSE(cost.PromptBudget(4).has_value());
  cost.Observe(4, 0, 0.020);  // A decode-only step: 20 ms.
  EXPECT_FALSE(cost.PromptBudget(4).has_value());
  cost.Observe(4, 100, 0.120);  // 100 prompt tokens cost 100 ms more.
  // 20 tokens: 20 ms, the step twice 20 ms.
  EXPECT_NEAR(static_cast<double>(*cost.PromptBudget(4)), 20, 1);
  EXPECT_FALSE(cost.PromptBudget(0).has_value());  // Nobody waits.
}

TEST(StepCost, PricesTheDecodeStepAtTheBatchOfTheMoment) {
  StepCost cost(2.0);
  for (int i = 0; i < 200; ++i) {
    const int64_t decodes = 1 + (i * 7) % 64, prompt = (i % 3) * 64;
    cost.Observe(decodes, prompt, Truth(decodes, prompt));
  }
  // (2 - 1) * (10 + 3 * d) ms / 0.5 ms.
  EXPECT_NEAR(static_cast<double>(*cost.PromptBudget(1)), 26, 1);
  EXPECT_NEAR(static_cast<double>(*cost.PromptBudget(16)), 116, 2);
  EXPECT_NEAR(static_cast<double>(*cost.PromptBudget(64)), 404, 4);
}

TEST(StepCost, OldSmallDecodeOnlyStepsDoNotStarveALargeMixedBatch) {
  // The load the first version starved: decode-only steps only while few
  // streams ran, then a large batch whose every step carries prompt tokens.
  StepCost cost(2.0);
  for (int i = 0; i < 10; ++i) cost.Observe(4, 0, Truth(4, 0));
  for (int i = 0; i < 100; ++i) {
    const int64_t decodes = 30 + i % 4, prompt = 40 + (i * 13) % 80;
    cost.Observe(decodes, prompt, Truth(decodes, prompt));
  }
  EXPECT_NEAR(static_cast<double>(*cost.PromptBudget(32)), 212, 4);  // 106 ms / 0.5 ms
}

TEST(StepCost, PromptOnlyStepsTeachTheTokenCost) {
  StepCost cost(3.0);
  cost.Observe(0, 200, Truth(0, 200));
  cost.Observe(0, 100, Truth(0, 100));
  cost.Observe(8, 0, Truth(8, 0));
  cost.Observe(2, 0, Truth(2, 0));
  EXPECT_NEAR(static_cast<double>(*cost.PromptBudget(8)), 136, 2);  // 2 * 34 ms / 0.5 ms
}

TEST(StepCost, FollowsTheMachineAndNeverStarvesPrompts) {
  StepCost cost(2.0);
  cost.Observe(4, 0, 0.010);
  for (int i = 0; i < 100; ++i) {
    cost.Observe(4, 0, 0.010);
    cost.Observe(4, 64 + i % 8, 0.010 + (64 + i % 8) * 0.004);  // Slow tokens.
  }
  EXPECT_EQ(cost.PromptBudget(4), StepCost::kMinPromptTokens);  // 2.5 tokens, floored.
  for (int i = 0; i < 100; ++i) {
    cost.Observe(4, 0, 0.010);
    cost.Observe(4, 64 + i % 8, 0.010 + (64 + i % 8) * 0.0001);  // Fast again.
  }
  EXPECT_GT(*cost.PromptBudget(4), 90);
  cost.Observe(4, 3, 5.0);   // Too few tokens to learn from.
  cost.Observe(4, 0, -1.0);  // Nonsense.
  EXPECT_GT(*cost.PromptBudget(4), 90);
}

TEST(StepCost, ARatioOfOneOrLessTurnsItOff) {
  StepCost cost(1.0);
  cost.Observe(4, 0, 0.020);
  cost.Observe(4, 100, 0.120);
  EXPECT_FALSE(cost.PromptBudget(4).has_value());
}

}  // namespace
}  // namespace fms
