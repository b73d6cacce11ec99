#include "model/fp32_gemv.h"

#include <immintrin.h>

#include <algorithm>

#include "model/gemv_blocking.h"

// GCC 12 flags an intrinsic's own "undefined" register as uninitialized when
// it is inlined (a false positive inside <immintrin.h>).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fms {
namespace {

constexpr int64_t kLanes = 16;  // floats per 512-bit register.

#define FMS_AVX512_TARGET __attribute__((target("avx512f")))

// y[t * y_stride + i] = w row i . x row t for n rows of w and b rows of x.
template <int n, int b>
FMS_AVX512_TARGET void Block(const float* w, const float* x, float* y, int64_t y_stride,
                             int64_t cols) {
  __m512 acc[n][b];
  // Every loop over n or b is unrolled so that acc and xv live in registers:
  // left to itself GCC kept Block<4, 4>'s in memory, and a batch-4 bf16 step
  // took 2.7x a batch-1 one (docs/benchmarks.md, "Register blocks").
  #pragma GCC unroll 16
  for (int i = 0; i < n; ++i) {
    #pragma GCC unroll 16
    for (int t = 0; t < b; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < cols; c += kLanes) {
    const int64_t left = cols - c;
    const __mmask16 mask = left >= kLanes ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    __m512 xv[b];
    #pragma GCC unroll 16
    for (int t = 0; t < b; ++t) xv[t] = _mm512_maskz_loadu_ps(mask, x + t * cols + c);
    #pragma GCC unroll 16
    for (int i = 0; i < n; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (n + i) * cols + c), _MM_HINT_T0);
      const __m512 wv = _mm512_maskz_loadu_ps(mask, w + i * cols + c);
      #pragma GCC unroll 16
      for (int t = 0; t < b; ++t) acc[i][t] = _mm512_fmadd_ps(wv, xv[t], acc[i][t]);
    }
  }
  #pragma GCC unroll 16
  for (int i = 0; i < n; ++i) {
    #pragma GCC unroll 16
    for (int t = 0; t < b; ++t) y[t * y_stride + i] = _mm512_reduce_add_ps(acc[i][t]);
  }
}

struct Fp32Kernel {
  template <int n, int b>
  static void Block(const float* w, const float* x, float* y, int64_t y_stride, int64_t cols) {
    fms::Block<n, b>(w, x, y, y_stride, cols);
  }
};

}  // namespace

bool HasAvx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return has;
}

void Fp32Gemv(const float* w, const float* x, int64_t batch, float* y, int64_t y_stride,
              int64_t rows, int64_t cols) {
  gemv_internal::Gemv<Fp32Kernel>(w, x, batch, y, y_stride, rows, cols);
}

}  // namespace fms
