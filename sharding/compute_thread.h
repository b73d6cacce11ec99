// ComputeThread: runs closures one at a time on one dedicated thread.
//
// LibTorch's OpenMP pool and InferenceMode belong to the calling thread
// (libtorch-build-notes.md section 6): a worker runs every model step on the
// same thread, not on whichever gRPC thread received it.

#ifndef FMS_SHARDING_COMPUTE_THREAD_H_
#define FMS_SHARDING_COMPUTE_THREAD_H_

#include <deque>
#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"

namespace fms {

class ComputeThread {
 public:
  ComputeThread();
  ~ComputeThread();

  // Runs `task` on the compute thread and waits for it. Thread-safe.
  void Run(const std::function<void()>& task);

 private:
  void Loop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace fms

#endif  // FMS_SHARDING_COMPUTE_THREAD_H_
