#include "server/admission.h"

#include <algorithm>

namespace fms {

void DeadlineAdmission::RecordInference(double inference_seconds) {
  absl::MutexLock lock(&mu_);
  mean_inference_s_ = mean_inference_s_.has_value()
                          ? (1 - kWeight) * *mean_inference_s_ + kWeight * inference_seconds
                          : inference_seconds;
}

std::optional<double> DeadlineAdmission::ExpectedSeconds(int64_t ahead, uint32_t n) const {
  absl::MutexLock lock(&mu_);
  if (!mean_inference_s_.has_value()) return std::nullopt;
  const double batches = static_cast<double>(std::max<int64_t>(ahead, 0) + n) /
                         std::max<uint32_t>(max_batch_size_, 1);
  return batches * *mean_inference_s_;
}

bool DeadlineAdmission::WouldMiss(absl::Time deadline, absl::Time now, int64_t ahead,
                                  uint32_t n) const {
  if (deadline == absl::InfiniteFuture()) return false;
  const std::optional<double> expected = ExpectedSeconds(ahead, n);
  return expected.has_value() && now + absl::Seconds(*expected) > deadline;
}

}  // namespace fms
