// Batcher: the thread that owns the Scheduler and every sequence, and drives
// the Engine one step at a time:
//
//   plan = scheduler.Schedule();  result = engine.Step(plan);  scheduler.Update(result)
//
// Submit, Cancel and Finish are thread-safe and never wait for the model:
// they leave a command in an inbox that the loop drains between steps. Each
// request's events go to its sink, on the batcher thread, in order, ending
// with exactly one final event. A step that fails fails exactly its
// sequences; the loop goes on with the queue.

#ifndef FMS_BATCHING_BATCHER_H_
#define FMS_BATCHING_BATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <thread>
#include <variant>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "batching/engine.h"
#include "batching/request.h"
#include "batching/scheduler.h"

namespace fms {

// Receives one request's events on the batcher thread; must not block.
using EventSink = std::function<void(const SequenceEvent&)>;

struct StepStats {
  int64_t batch_size = 0;   // Sequences in the step.
  int64_t tokens = 0;       // Tokens processed by the step.
  int64_t preemptions = 0;  // In this step.
  double step_seconds = 0;  // Engine time of the step.
  // Prefix caching, in this step's admissions: prompt tokens looked up, and
  // those found cached.
  int64_t prefix_queries = 0;
  int64_t prefix_hits = 0;
  StepTimings worker;  // Rank 0's own account of step_seconds.
};

// The scheduler's occupancy, published whenever it changes: after a step, and
// after cancellations, stop sequences or arrivals that no step follows (the last
// step of a load would otherwise leave its blocks counted as used).
struct QueueState {
  int64_t waiting = 0;      // Requests in the queue.
  int64_t running = 0;      // Sequences holding KV blocks.
  int64_t free_blocks = 0;  // Free KV blocks.
  int64_t cached_blocks = 0;  // Blocks holding a reusable prefix, held or free.
  bool operator==(const QueueState&) const = default;
};

// Metrics hooks, called on the batcher thread.
class BatcherMetrics {
 public:
  virtual ~BatcherMetrics() = default;
  virtual void OnStep(const StepStats& stats) { (void)stats; }
  virtual void OnState(const QueueState& state) { (void)state; }
  // A request reached the batch after `queue_seconds` in the queue.
  virtual void OnAdmitted(double queue_seconds) { (void)queue_seconds; }
};

class Batcher {
 public:
  // `engine` and `metrics` (may be null) must outlive the batcher.
  Batcher(Engine* engine, SchedulerConfig config, BatcherMetrics* metrics = nullptr);
  ~Batcher();  // Shutdown().

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues `request` (its id is assigned here and returned). Thread-safe.
  absl::StatusOr<SequenceId> Submit(Request request, EventSink sink);
  // Ends a request at the next step with CANCELLED / `reason`. Thread-safe.
  void Cancel(SequenceId id) { Finish(id, FinishReason::kCancelled); }
  void Finish(SequenceId id, FinishReason reason);
  // Stops the loop; requests still open end with an UNAVAILABLE error.
  void Shutdown();
  // The engine lost every sequence (its workers were restarted): each open
  // request ends with `status` and the scheduler starts empty. Thread-safe;
  // takes effect between steps.
  void Reset(absl::Status status);

 private:
  struct Submission {
    Request request;
    EventSink sink;
    std::optional<Clock::time_point> admitted;  // First admission to the batch.
    bool admission_told = false;  // An event carried `admitted` to the sink.
  };
  struct Ending {
    SequenceId id;
    FinishReason reason;
  };
  struct ResetAll {
    absl::Status status;
  };
  using Command = std::variant<Submission, Ending, ResetAll>;

  void Loop();
  // Applies queued commands; returns false once shutting down.
  bool DrainInbox();
  void RunStep();
  void PublishState();
  void Deliver(const std::vector<SequenceEvent>& events);
  void FailOpen(const absl::Status& status);

  Engine* const engine_;
  BatcherMetrics* const metrics_;
  Scheduler scheduler_;  // Batcher thread only.
  std::map<SequenceId, Submission> open_;  // Batcher thread only.
  std::optional<QueueState> published_;    // Batcher thread only.
  SchedulerStats last_stats_;              // Batcher thread only: for per-step deltas.

  absl::Mutex mu_;
  std::deque<Command> inbox_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  SequenceId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::thread thread_;
};

}  // namespace fms

#endif  // FMS_BATCHING_BATCHER_H_
