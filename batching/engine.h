// Engine: what the batcher drives. Implemented in-process by the model
// (tests, benchmarks) and by the worker-process client (sharding/).

#ifndef FMS_BATCHING_ENGINE_H_
#define FMS_BATCHING_ENGINE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "batching/step.h"

namespace fms {

struct EngineInfo {
  int64_t num_blocks = 0;   // KV cache blocks available to the scheduler.
  int64_t block_size = 0;   // Token positions per block.
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  std::vector<int32_t> eos_token_ids;
  // Checkpoint tensors holding NaN or infinity (rank 0's slices), for a warning.
  std::vector<std::string> non_finite_weights;
};

class Engine {
 public:
  virtual ~Engine() = default;

  virtual EngineInfo Info() const = 0;

  // Runs one iteration. A failure fails exactly the sequences of `plan`;
  // the engine must still accept later plans (which list them as finished).
  virtual absl::StatusOr<StepResult> Step(const StepPlan& plan) = 0;
};

}  // namespace fms

#endif  // FMS_BATCHING_ENGINE_H_
