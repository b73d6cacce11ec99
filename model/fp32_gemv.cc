#include "model/fp32_gemv.h"

#include <immintrin.h>

#include <algorithm>

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
  for (int i = 0; i < n; ++i) {
    for (int t = 0; t < b; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < cols; c += kLanes) {
    const int64_t left = cols - c;
    const __mmask16 mask = left >= kLanes ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    __m512 xv[b];
    for (int t = 0; t < b; ++t) xv[t] = _mm512_maskz_loadu_ps(mask, x + t * cols + c);
    for (int i = 0; i < n; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (n + i) * cols + c), _MM_HINT_T0);
      const __m512 wv = _mm512_maskz_loadu_ps(mask, w + i * cols + c);
      for (int t = 0; t < b; ++t) acc[i][t] = _mm512_fmadd_ps(wv, xv[t], acc[i][t]);
    }
  }
  for (int i = 0; i < n; ++i) {
    for (int t = 0; t < b; ++t) y[t * y_stride + i] = _mm512_reduce_add_ps(acc[i][t]);
  }
}

template <int b>
void Rows(const float* w, const float* x, float* y, int64_t y_stride, int64_t rows,
          int64_t cols) {
  constexpr int n = b <= 2 ? 8 : 4;  // accumulators n * b within 32 registers
  int64_t r = 0;
  for (; r + n <= rows; r += n) Block<n, b>(w + r * cols, x, y + r, y_stride, cols);
  for (; r < rows; ++r) Block<1, b>(w + r * cols, x, y + r, y_stride, cols);
}

// Block<n, b> for b = 1..4 chosen at run time.
template <int n>
void BlockOf(const float* w, const float* x, int64_t b, float* y, int64_t y_stride,
             int64_t cols) {
  switch (b) {
    case 1: return Block<n, 1>(w, x, y, y_stride, cols);
    case 2: return Block<n, 2>(w, x, y, y_stride, cols);
    case 3: return Block<n, 3>(w, x, y, y_stride, cols);
    default: return Block<n, 4>(w, x, y, y_stride, cols);
  }
}

// More than 4 rows of x: each block of 4 weight rows meets every group of up
// to 4 x rows while it is in L1, so W is read from memory once per call.
void Wide(const float* w, const float* x, int64_t batch, float* y, int64_t y_stride,
          int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r += 4) {
    const bool full = r + 4 <= rows;
    for (int64_t t = 0; t < batch; t += 4) {
      const int64_t b = std::min<int64_t>(4, batch - t);
      const float* xs = x + t * cols;
      float* ys = y + t * y_stride;
      if (full) {
        BlockOf<4>(w + r * cols, xs, b, ys + r, y_stride, cols);
        continue;
      }
      for (int64_t i = r; i < rows; ++i) {
        BlockOf<1>(w + i * cols, xs, b, ys + i, y_stride, cols);
      }
    }
  }
}

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
  switch (batch) {
    case 1: return Rows<1>(w, x, y, y_stride, rows, cols);
    case 2: return Rows<2>(w, x, y, y_stride, rows, cols);
    case 3: return Rows<3>(w, x, y, y_stride, rows, cols);
    case 4: return Rows<4>(w, x, y, y_stride, rows, cols);
  }
  Wide(w, x, batch, y, y_stride, rows, cols);
}

}  // namespace fms
