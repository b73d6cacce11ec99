// How many compute threads one step gets. A worker keeps one core free for
// the front end (cpu_budget.h): an OpenMP region waits for its slowest
// thread, so a small decode step on every core stalls whenever the front end
// runs. A large step (a prompt chunk, a big decode batch) lasts long enough
// that such a stall costs little, while the extra core nearly halves it.

#ifndef FMS_SHARDING_STEP_THREADS_H_
#define FMS_SHARDING_STEP_THREADS_H_

#include <cstdint>

#include "batching/step.h"

namespace fms {

struct StepThreadOptions {
  // Threads for a step of fewer than `large_step_rows` rows: the worker's
  // share of the cores less the front end's (WorkerThreads).
  int small_step_threads = 1;
  // Threads for a larger step: the worker's whole share (cpu_budget.h
  // LargeStepThreads).
  int large_step_threads = 1;
  // Rows (tokens processed) from which a step is large.
  int64_t large_step_rows = 16;
};

// Tokens `plan` processes: the sum of its chunks' lengths.
int64_t PlanRows(const StepPlan& plan);

// The intra-op threads for `plan`.
int StepThreads(const StepThreadOptions& options, const StepPlan& plan);

}  // namespace fms

#endif  // FMS_SHARDING_STEP_THREADS_H_
