// Where a model's weights come from: a checkpoint on disk (safetensors.h) or
// random numbers of the right shapes (random_weights.h, for benchmarks of
// model shapes whose checkpoints are not at hand).

#ifndef FMS_MODEL_WEIGHT_SOURCE_H_
#define FMS_MODEL_WEIGHT_SOURCE_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fms {

// A contiguous range along one dimension of a tensor: a rank's slice.
struct TensorSlice {
  int64_t dim = 0;
  int64_t begin = 0;
  int64_t length = -1;  // -1: the whole tensor, no slicing.
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;

  // Tensor `name` (Hugging Face naming), or only `slice` of it, as an owned
  // contiguous tensor of `dtype`. Fails, naming the tensor, when it is
  // missing or its whole shape is not `expected_shape`.
  virtual absl::StatusOr<at::Tensor> Read(const std::string& name,
                                          const std::vector<int64_t>& expected_shape,
                                          at::ScalarType dtype,
                                          const TensorSlice& slice = {}) const = 0;
};

}  // namespace fms

#endif  // FMS_MODEL_WEIGHT_SOURCE_H_
