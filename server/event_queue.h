// EventQueue: hands the sequence events of one RPC's inputs from the batcher
// thread to the RPC's thread. Push is all the batcher thread does for a
// request (no text work, no waiting beyond a short mutex); the RPC thread
// takes the events and does the detokenization and stop-sequence work.

#ifndef FMS_SERVER_EVENT_QUEUE_H_
#define FMS_SERVER_EVENT_QUEUE_H_

#include <cstddef>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "batching/request.h"

namespace fms {

struct QueuedEvent {
  size_t input = 0;  // Index of the input within its RPC.
  SequenceEvent event;
  Clock::time_point received;  // When the batcher delivered it.
};

class EventQueue {
 public:
  // Batcher thread.
  void Push(size_t input, const SequenceEvent& event) {
    QueuedEvent queued{.input = input, .event = event, .received = Clock::now()};
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(queued));
  }

  // RPC thread: every queued event, oldest first, waiting up to `timeout`
  // for the first one (none when the time passes).
  std::vector<QueuedEvent> Take(absl::Duration timeout) {
    std::vector<QueuedEvent> taken;
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(
        absl::Condition(+[](std::vector<QueuedEvent>* events) { return !events->empty(); },
                        &events_),
        timeout);
    taken.swap(events_);
    return taken;
  }

 private:
  absl::Mutex mu_;
  std::vector<QueuedEvent> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fms

#endif  // FMS_SERVER_EVENT_QUEUE_H_
