// A bf16 matrix-vector product for decode on CPUs with AVX512-BF16.
//
// oneDNN's bf16 path for a one-row at::linear reads about 18 GB/s on this
// project's CPU (docs/benchmarks.md), a fraction of the memory bandwidth that
// batch-1 decode is bound by. This kernel streams each weight row once with
// VDPBF16PS (pairs of bf16 products accumulated in fp32) and is called per
// thread on a slice of rows (model/linear.cc).

#ifndef FMS_MODEL_BF16_GEMV_H_
#define FMS_MODEL_BF16_GEMV_H_

#include <c10/util/BFloat16.h>

#include <cstdint>

namespace fms {

// True when this CPU executes AVX512-BF16 (checked once).
bool HasBf16DotProduct();

// y[t * y_stride + r] = sum_c w[r * cols + c] * x[t * cols + c] for r in
// [0, rows) and t in [0, batch): accumulated in fp32, rounded to bf16 once.
// w [rows, cols] and x [batch, cols] contiguous; each load of w serves up to
// 4 rows of x. Only call when HasBf16DotProduct().
void Bf16Gemv(const c10::BFloat16* w, const c10::BFloat16* x, int64_t batch,
              c10::BFloat16* y, int64_t y_stride, int64_t rows, int64_t cols);

}  // namespace fms

#endif  // FMS_MODEL_BF16_GEMV_H_
