#include "sharding/step_threads.h"

#include "gtest/gtest.h"

namespace fms {
namespace {

StepPlan PlanOf(std::vector<int64_t> lengths) {
  StepPlan plan;
  for (int64_t n : lengths) {
    ScheduledChunk chunk;
    chunk.token_ids.assign(n, 7);
    plan.chunks.push_back(chunk);
  }
  return plan;
}

TEST(StepThreads, SmallStepsLeaveTheFrontEndItsCoreAndLargeOnesTakeAll) {
  const StepThreadOptions options{
      .small_step_threads = 1, .large_step_threads = 2, .large_step_rows = 16};
  EXPECT_EQ(StepThreads(options, PlanOf({})), 1);
  EXPECT_EQ(StepThreads(options, PlanOf({1, 1, 1})), 1);                 // Three decodes.
  EXPECT_EQ(StepThreads(options, PlanOf(std::vector<int64_t>(15, 1))), 1);
  EXPECT_EQ(StepThreads(options, PlanOf(std::vector<int64_t>(16, 1))), 2);
  EXPECT_EQ(StepThreads(options, PlanOf({107})), 2);                     // A prompt.
  EXPECT_EQ(StepThreads(options, PlanOf({1, 1, 14})), 2);                // Mixed.
  EXPECT_EQ(PlanRows(PlanOf({1, 1, 14})), 16);
}

}  // namespace
}  // namespace fms
