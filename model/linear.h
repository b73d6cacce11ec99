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
// at::linear per slice.

#ifndef FMS_MODEL_LINEAR_H_
#define FMS_MODEL_LINEAR_H_

#include <ATen/ATen.h>

namespace fms {

// x [T, in], w [out, in], b [out] or undefined -> [T, out]
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

}  // namespace fms

#endif  // FMS_MODEL_LINEAR_H_
