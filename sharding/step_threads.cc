#include "sharding/step_threads.h"

namespace fms {

int64_t PlanRows(const StepPlan& plan) {
  int64_t rows = 0;
  for (const ScheduledChunk& chunk : plan.chunks) {
    rows += static_cast<int64_t>(chunk.token_ids.size());
  }
  return rows;
}

int StepThreads(const StepThreadOptions& options, const StepPlan& plan) {
  return PlanRows(plan) >= options.large_step_rows ? options.large_step_threads
                                                   : options.small_step_threads;
}

}  // namespace fms
