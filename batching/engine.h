// Engine: what the batcher drives. Implemented in-process by the model
// (tests, benchmarks) and by the worker-process client (sharding/).

#ifndef FMS_BATCHING_ENGINE_H_
#define FMS_BATCHING_ENGINE_H_

#include <cstdint>
#include <string>
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

// An adapter as loaded (model/adapter.h): what the front end needs of it.
struct AdapterInfo {
  std::string peft_type;       // "LORA", "PROMPT_TUNING" or "TGIS_DECODER_PT".
  int64_t virtual_tokens = 0;  // Prompt tuning: placeholders to prepend.
  int64_t rank = 0;            // LoRA r.
  int64_t bytes = 0;           // Of rank 0's tensors.
};

class Engine {
 public:
  virtual ~Engine() = default;

  virtual EngineInfo Info() const = 0;

  // Runs one iteration. A failure fails exactly the sequences of `plan`;
  // the engine must still accept later plans (which list them as finished).
  virtual absl::StatusOr<StepResult> Step(const StepPlan& plan) = 0;

  // Loads the adapter in directory `dir` under `id` (replacing one of that
  // id); plans may then name it in NewSequence::adapter. Thread-safe with
  // Step. Fails, naming the tensor, when it does not fit the model.
  virtual absl::StatusOr<AdapterInfo> LoadAdapter(const std::string& /*id*/,
                                                  const std::string& /*dir*/) {
    return absl::UnimplementedError("this engine serves no adapters");
  }
  // Forgets `id`; sequences already using it keep it until they finish.
  virtual void UnloadAdapter(const std::string& /*id*/) {}
};

}  // namespace fms

#endif  // FMS_BATCHING_ENGINE_H_
