// AVX-512 loops over one row for the CPU decode path's elementwise steps
// (model/decode_kernels.h), in float and bfloat16.
//
// The plain loops of decode_kernels.cc convert each bf16 value one at a time
// and call expf per value; at batch 64 SiLU alone was 12 % of a SmolLM2 step
// (docs/benchmarks.md, "Prepacked bf16 weights"). These do 16 values an
// instruction and round where the plain loops round: to E after every
// product that LibTorch's ops would store (bf16 by round-to-nearest-even, as
// c10::BFloat16). exp is a degree-6 polynomial after range reduction, within
// 2 ulp of expf in fp32.

#ifndef FMS_MODEL_ROW_KERNELS_H_
#define FMS_MODEL_ROW_KERNELS_H_

#include <c10/util/BFloat16.h>

#include <cstdint>

namespace fms {

// True when the loops below may run for E: on CPUs with AVX512-BF16 for both
// types (one compile target; checked once).
template <typename E>
bool HasRowKernels();

// y[i] = round(silu(gate[i])) * up[i], for i in [0, n).
template <typename E>
void SiluMulRow(const E* gate, const E* up, E* y, int64_t n);

// y[i] = w[i] * round(x[i] * r), r = 1 / sqrt(mean(x^2) + eps) in fp32.
template <typename E>
void RmsNormRow(const E* x, const E* w, E* y, int64_t n, float eps);

// a[i] += b[i], for i in [0, n).
template <typename E>
void AddRow(E* a, const E* b, int64_t n);

// Rotary embedding of `heads` vectors of d values at x, in place: x * cos +
// rotate_half(x) * sin, cos and sin [d] fp32 rounded to E and every product
// rounded to E, as transformers' apply_rotary_pos_emb in E. d even.
template <typename E>
void RopeRow(E* x, const float* cos, const float* sin, int64_t heads, int64_t d);

}  // namespace fms

#endif  // FMS_MODEL_ROW_KERNELS_H_
