// DeadlineAdmission: sheds a call whose deadline the queue ahead of it would
// miss (issue 13, overload). Without it, an open loop above capacity fills the
// queue up to MAX_CONCURRENT_REQUESTS and most callers wait out their
// deadline there: a pile of DEADLINE_EXCEEDED after seconds of waiting,
// instead of an immediate RESOURCE_EXHAUSTED ("Model is overloaded") they can
// retry elsewhere.
//
// The estimate: the batch finishes max_batch_size inputs per mean inference
// time (admission to last token, an exponential average over recent inputs),
// so a call that finds `ahead` inputs in flight finishes after about
//   (ahead + n) / max_batch_size * mean_inference_seconds.
// It under-estimates rather than over-estimates (a partly full batch runs
// faster per step than a full one), so it sheds only calls that would miss
// their deadline by a wide margin. Calls without a deadline are never shed
// here; nor is any call before the first inputs have finished.
//
// Thread-safe.

#ifndef FMS_SERVER_ADMISSION_H_
#define FMS_SERVER_ADMISSION_H_

#include <cstdint>
#include <optional>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fms {

class DeadlineAdmission {
 public:
  explicit DeadlineAdmission(uint32_t max_batch_size) : max_batch_size_(max_batch_size) {}

  // An input finished `inference_seconds` after it was admitted.
  void RecordInference(double inference_seconds);

  // Expected seconds until a call of `n` inputs that finds `ahead` in flight
  // finishes; nullopt before any input has finished.
  std::optional<double> ExpectedSeconds(int64_t ahead, uint32_t n) const;

  // True when the call would finish after `deadline` (absl::InfiniteFuture():
  // none) by the estimate.
  bool WouldMiss(absl::Time deadline, absl::Time now, int64_t ahead, uint32_t n) const;

 private:
  static constexpr double kWeight = 0.05;  // Of each new sample in the average.
  const uint32_t max_batch_size_;
  mutable absl::Mutex mu_;
  std::optional<double> mean_inference_s_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fms

#endif  // FMS_SERVER_ADMISSION_H_
