#include "server/admission.h"

#include "gtest/gtest.h"

namespace fms {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'000'000);

TEST(DeadlineAdmission, NeverShedsBeforeAnInputFinishedOrWithoutADeadline) {
  DeadlineAdmission admission(16);
  EXPECT_FALSE(admission.ExpectedSeconds(1000, 1).has_value());
  EXPECT_FALSE(admission.WouldMiss(kNow + absl::Milliseconds(1), kNow, 1000, 1));
  admission.RecordInference(4.0);
  EXPECT_FALSE(admission.WouldMiss(absl::InfiniteFuture(), kNow, 1'000'000, 1));
}

TEST(DeadlineAdmission, ShedsWhenTheQueueAheadOutlastsTheDeadline) {
  DeadlineAdmission admission(16);
  admission.RecordInference(4.0);  // A full batch of 16 finishes every 4 s.
  EXPECT_DOUBLE_EQ(*admission.ExpectedSeconds(63, 1), 16.0);  // 4 batches.
  EXPECT_FALSE(admission.WouldMiss(kNow + absl::Seconds(20), kNow, 63, 1));
  EXPECT_TRUE(admission.WouldMiss(kNow + absl::Seconds(20), kNow, 95, 1));  // 24 s.
  EXPECT_TRUE(admission.WouldMiss(kNow + absl::Seconds(20), kNow, 60, 40));  // A big batch.
}

TEST(DeadlineAdmission, TheAverageFollowsRecentInputs) {
  DeadlineAdmission admission(1);
  admission.RecordInference(10.0);
  for (int i = 0; i < 200; ++i) admission.RecordInference(1.0);
  EXPECT_NEAR(*admission.ExpectedSeconds(0, 1), 1.0, 0.01);
}

}  // namespace
}  // namespace fms
