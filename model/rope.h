// Rotary position embeddings in the Hugging Face rotate-half convention, on
// HF weights as stored (q/k rows already permuted for it): pairs are
// (x[i], x[i + d/2]). Frequencies follow transformers exactly, including the
// `linear` and `llama3` scalings, computed in fp32.

#ifndef FMS_MODEL_ROPE_H_
#define FMS_MODEL_ROPE_H_

#include <ATen/ATen.h>

#include "model/llama_config.h"

namespace fms {

class Rope {
 public:
  Rope(const LlamaConfig& config, at::Device device);

  // cos and sin for `positions` [T] (int64): each [T, head_dim], fp32.
  std::pair<at::Tensor, at::Tensor> CosSin(const at::Tensor& positions) const;

  // Rotates x [T, heads, head_dim] by cos/sin [T, head_dim] (cast to x's
  // dtype first, as transformers does).
  static at::Tensor Apply(const at::Tensor& x, const at::Tensor& cos,
                          const at::Tensor& sin);

 private:
  at::Tensor inv_freq_;  // [head_dim / 2], fp32.
};

}  // namespace fms

#endif  // FMS_MODEL_ROPE_H_
