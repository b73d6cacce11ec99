#include "model/random_weights.h"

#include "absl/strings/match.h"

namespace fms {

RandomWeights::RandomWeights(at::Device device, uint64_t seed, double std)
    : device_(device), std_(std) {
  at::manual_seed(seed);  // The CPU and every CUDA generator.
}

absl::StatusOr<at::Tensor> RandomWeights::Read(const std::string& name,
                                               const std::vector<int64_t>& expected_shape,
                                               at::ScalarType dtype,
                                               const TensorSlice& slice) const {
  std::vector<int64_t> shape = expected_shape;
  if (slice.length >= 0) shape[slice.dim] = slice.length;
  const auto options = at::TensorOptions().dtype(dtype).device(device_);
  if (absl::StrContains(name, "norm")) return at::ones(shape, options);
  return at::randn(shape, options).mul_(std_);
}

LlamaConfig Llama2_7bConfig() {
  LlamaConfig c;
  c.hidden_size = 4096;
  c.intermediate_size = 11008;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 32;
  c.head_dim = 128;
  c.vocab_size = 32000;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

}  // namespace fms
