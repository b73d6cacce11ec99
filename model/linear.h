// y = x W^T + b for the model's projections, with a CPU path for decode.
//
// On this project's CPUs the BLAS matrix-vector product that a one-row
// at::linear becomes runs on one thread (MKL sgemv: ~14 GB/s of the ~50 GB/s
// two cores can read), so small-batch decode would be bound by one core's
// bandwidth. For a few rows, Linear splits W's rows across the intra-op
// threads instead; each thread multiplies its slice. The slices go through
// model/bf16_gemv.h in bf16 on CPUs with AVX512-BF16 (oneDNN's bf16
// matrix-vector path reads a fraction of the bandwidth) and through
// model/fp32_gemv.h in fp32 on CPUs with AVX-512F; elsewhere through
// at::linear per slice. Above the kernels' rows, a weight that the model
// packed at load (bf16 or fp32) goes through oneDNN's prepacked matmul
// (model/onednn_linear.h).

#ifndef FMS_MODEL_LINEAR_H_
#define FMS_MODEL_LINEAR_H_

#include <ATen/ATen.h>

namespace fms {

// A projection's weight as the model holds it: W, which the decode kernels
// read, and oneDNN's blocked copy of it for products of many rows.
struct LinearWeight {
  at::Tensor w;       // [out, in]
  at::Tensor packed;  // onednn_linear.h's copy of w, or undefined
};

// Wraps `w` [out, in], packing a copy where model/onednn_linear.h applies.
LinearWeight MakeLinearWeight(at::Tensor w);

// x [T, in], w [out, in], b [out] or undefined -> [T, out]
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);
// The same, through w.packed when x has more rows than the kernels serve.
at::Tensor Linear(const at::Tensor& x, const LinearWeight& w, const at::Tensor& b);

}  // namespace fms

#endif  // FMS_MODEL_LINEAR_H_
