#include "model/bf16_gemv.h"

#include <immintrin.h>

#include <algorithm>

#include "model/gemv_blocking.h"

// GCC 12 flags an intrinsic's own "undefined" register as uninitialized when
// _mm512_reduce_add_ps is inlined (a false positive inside <immintrin.h>).
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace fms {
namespace {

constexpr int64_t kLanes = 32;       // bf16 values per 512-bit register.

#define FMS_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

FMS_BF16_TARGET inline __m512bh Load(const c10::BFloat16* p, __mmask32 mask) {
  return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, p));
}

// y[t * y_stride + i] = w row i . x row t, for `n` rows of w and `b` rows of x:
// each load of w serves every x row, each load of x every w row.
template <int n, int b>
FMS_BF16_TARGET void Block(const c10::BFloat16* w, const c10::BFloat16* x,
                           c10::BFloat16* y, int64_t y_stride, int64_t cols) {
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
    const __mmask32 mask = left >= kLanes ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
    __m512bh xv[b];
    #pragma GCC unroll 16
    for (int t = 0; t < b; ++t) xv[t] = Load(x + t * cols + c, mask);
    #pragma GCC unroll 16
    for (int i = 0; i < n; ++i) {
      // The next block's rows, one line each: a row is too short (1,152 bytes
      // at SmolLM2's width) for the hardware prefetcher to ramp up on.
      _mm_prefetch(reinterpret_cast<const char*>(w + (n + i) * cols + c), _MM_HINT_T0);
      const __m512bh wv = Load(w + i * cols + c, mask);
      #pragma GCC unroll 16
      for (int t = 0; t < b; ++t) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv, xv[t]);
    }
  }
  #pragma GCC unroll 16
  for (int i = 0; i < n; ++i) {
    #pragma GCC unroll 16
    for (int t = 0; t < b; ++t) {
      y[t * y_stride + i] = c10::BFloat16(_mm512_reduce_add_ps(acc[i][t]));
    }
  }
}

struct Bf16Kernel {
  template <int n, int b>
  static void Block(const c10::BFloat16* w, const c10::BFloat16* x, c10::BFloat16* y,
                    int64_t y_stride, int64_t cols) {
    fms::Block<n, b>(w, x, y, y_stride, cols);
  }
};

}  // namespace

bool HasBf16DotProduct() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has;
}

void Bf16Gemv(const c10::BFloat16* w, const c10::BFloat16* x, int64_t batch,
              c10::BFloat16* y, int64_t y_stride, int64_t rows, int64_t cols) {
  gemv_internal::Gemv<Bf16Kernel>(w, x, batch, y, y_stride, rows, cols);
}

}  // namespace fms
