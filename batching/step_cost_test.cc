#include "batching/step_cost.h"

#include "gtest/gtest.h"

namespace fms {
namespace {

TEST(StepCost, NoLimitUntilBothCostsAreKnownOrWithoutDecodes) {
  StepCost cost(2.0);
  EXPECT_FALSE(cost.PromptBudget(4).has_value());
  cost.Observe(4, 0, 0.020);  // A decode-only step: 20 ms.
  EXPECT_FALSE(cost.PromptBudget(4).has_value());
  cost.Observe(4, 100, 0.120);  // 100 prompt tokens cost 100 ms more.
  EXPECT_EQ(cost.PromptBudget(4), 20);  // 20 tokens: 20 ms, the step twice 20 ms.
  EXPECT_FALSE(cost.PromptBudget(0).has_value());  // Nobody waits.
}

TEST(StepCost, PromptOnlyStepsGiveASmallerEstimate) {
  StepCost cost(3.0);
  cost.Observe(0, 200, 0.220);  // 1.1 ms a token, the fixed cost included.
  cost.Observe(8, 0, 0.022);
  EXPECT_EQ(cost.PromptBudget(8), 40);  // (3 - 1) * 22 ms / 1.1 ms.
}

TEST(StepCost, FollowsTheMachineAndNeverStarvesPrompts) {
  StepCost cost(2.0);
  cost.Observe(4, 0, 0.010);
  for (int i = 0; i < 50; ++i) cost.Observe(4, 64, 0.010 + 64 * 0.004);  // Slow tokens.
  EXPECT_EQ(cost.PromptBudget(4), StepCost::kMinPromptTokens);  // 2.5 tokens, floored.
  for (int i = 0; i < 50; ++i) cost.Observe(4, 64, 0.010 + 64 * 0.0001);  // Fast again.
  EXPECT_GT(*cost.PromptBudget(4), 90);
  cost.Observe(4, 3, 5.0);  // Too few tokens to learn from.
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
