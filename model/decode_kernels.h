// The elementwise steps of a layer as plain loops, for the model's CPU paths
// (LlamaModel::ForwardDecodes, and Forward where UsesRowLoops).
//
// At batch 1 a SmolLM2 layer's RMSNorms, rotary embedding, cache writes,
// SiLU and residual adds are ~30 dispatched LibTorch ops on a few hundred
// values each: more time in the dispatcher than in the arithmetic (docs/
// benchmarks.md, "The CPU decode path"). Each function here is one loop over
// the rows, parallel only when there are many. They round where the
// LibTorch ops of the eager baseline and the GPU path round (every op's
// result in the model's dtype, RMSNorm statistics in fp32), so the paths
// agree to summation order. float and bfloat16.

#ifndef FMS_MODEL_DECODE_KERNELS_H_
#define FMS_MODEL_DECODE_KERNELS_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace fms {

// x [T, n] -> weight * (x * rsqrt(mean(x^2) + eps)), weight [n].
at::Tensor RmsNormRows(const at::Tensor& x, const at::Tensor& weight, double eps);

// Rotates q and k of qkv [T, (heads + 2 * kv_heads) * d] in place with
// cos, sin [T, d] (fp32, Rope::CosSin), then copies row t's keys and values to
// slot slots[t] of the caches [slots, kv_heads, d].
struct QkvLayout {
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
};
void RotateAndCache(const QkvLayout& layout, const at::Tensor& cos, const at::Tensor& sin,
                    absl::Span<const int64_t> slots, at::Tensor& qkv,
                    at::Tensor& key_cache, at::Tensor& value_cache);

// gate_up [T, 2 * n] -> silu(gate) * up [T, n].
at::Tensor SiluMul(const at::Tensor& gate_up);

// x += y, both [T, n] contiguous, one dtype.
void AddInPlace(at::Tensor& x, const at::Tensor& y);

}  // namespace fms

#endif  // FMS_MODEL_DECODE_KERNELS_H_
