// Random weights of the right shapes for any LlamaConfig: benchmarks of model
// shapes (LLaMa-2-7B on a GPU) without writing a checkpoint to disk first.
// Matrices are N(0, std), norm weights are ones; tensors are made directly on
// `device`. Deterministic for a seed and a read order.

#ifndef FMS_MODEL_RANDOM_WEIGHTS_H_
#define FMS_MODEL_RANDOM_WEIGHTS_H_

#include "model/llama_config.h"
#include "model/weight_source.h"

namespace fms {

class RandomWeights : public WeightSource {
 public:
  RandomWeights(at::Device device, uint64_t seed, double std = 0.02);

  absl::StatusOr<at::Tensor> Read(const std::string& name,
                                  const std::vector<int64_t>& expected_shape,
                                  at::ScalarType dtype,
                                  const TensorSlice& slice = {}) const override;

 private:
  at::Device device_;
  double std_;
};

// LLaMa-2-7B's hyper-parameters (its config.json): 32 layers, hidden 4096,
// 32 heads, intermediate 11008, vocabulary 32000.
LlamaConfig Llama2_7bConfig();

}  // namespace fms

#endif  // FMS_MODEL_RANDOM_WEIGHTS_H_
