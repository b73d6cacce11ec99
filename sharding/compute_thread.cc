#include "sharding/compute_thread.h"

#include "absl/synchronization/notification.h"

namespace fms {

ComputeThread::ComputeThread() : thread_([this] { Loop(); }) {}

ComputeThread::~ComputeThread() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void ComputeThread::Run(const std::function<void()>& task) {
  absl::Notification done;
  {
    absl::MutexLock lock(&mu_);
    tasks_.push_back([&] {
      task();
      done.Notify();
    });
  }
  done.WaitForNotification();
}

void ComputeThread::Loop() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ComputeThread* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) {
            return !t->tasks_.empty() || t->stopping_;
          },
          this));
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace fms
