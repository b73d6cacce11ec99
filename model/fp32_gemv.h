// An fp32 matrix-vector product for decode on CPUs with AVX-512.
//
// A one-row fp32 at::linear is MKL's sgemv on one thread; Linear used to split
// W's rows and call it per thread on a slice (linear.h), which read 20-30 GB/s
// of SmolLM2's short rows (576 floats). This kernel is the fp32 twin of
// bf16_gemv.h: 8 weight rows per block sharing each load of x, and the next
// block prefetched while this one is summed, since rows that short end before
// the hardware prefetcher ramps up (docs/benchmarks.md, "The CPU decode path").

#ifndef FMS_MODEL_FP32_GEMV_H_
#define FMS_MODEL_FP32_GEMV_H_

#include <cstdint>

namespace fms {

// True when this CPU executes AVX-512F (checked once).
bool HasAvx512();

// y[t * y_stride + r] = sum_c w[r * cols + c] * x[t * cols + c] for r in
// [0, rows) and t in [0, batch), accumulated in fp32 in 16 lanes. w [rows,
// cols] and x [batch, cols] contiguous. Only call when HasAvx512().
void Fp32Gemv(const float* w, const float* x, int64_t batch, float* y, int64_t y_stride,
              int64_t rows, int64_t cols);

}  // namespace fms

#endif  // FMS_MODEL_FP32_GEMV_H_
