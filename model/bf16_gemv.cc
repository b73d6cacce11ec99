#include "model/bf16_gemv.h"

#include <immintrin.h>

#include <algorithm>

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
  for (int i = 0; i < n; ++i) {
    for (int t = 0; t < b; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < cols; c += kLanes) {
    const int64_t left = cols - c;
    const __mmask32 mask = left >= kLanes ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
    __m512bh xv[b];
    for (int t = 0; t < b; ++t) xv[t] = Load(x + t * cols + c, mask);
    for (int i = 0; i < n; ++i) {
      // The next block's rows, one line each: a row is too short (1,152 bytes
      // at SmolLM2's width) for the hardware prefetcher to ramp up on.
      _mm_prefetch(reinterpret_cast<const char*>(w + (n + i) * cols + c), _MM_HINT_T0);
      const __m512bh wv = Load(w + i * cols + c, mask);
      for (int t = 0; t < b; ++t) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv, xv[t]);
    }
  }
  for (int i = 0; i < n; ++i) {
    for (int t = 0; t < b; ++t) {
      y[t * y_stride + i] = c10::BFloat16(_mm512_reduce_add_ps(acc[i][t]));
    }
  }
}

// Rows of w per block for `b` rows of x: as many weight streams as the 32
// vector registers allow next to n * b accumulators (measured: 8 beat 4 and 2
// at batch 1, docs/benchmarks.md).
template <int b>
void Rows(const c10::BFloat16* w, const c10::BFloat16* x, c10::BFloat16* y,
          int64_t y_stride, int64_t rows, int64_t cols) {
  constexpr int n = b <= 2 ? 8 : 4;
  int64_t r = 0;
  for (; r + n <= rows; r += n) {
    Block<n, b>(w + r * cols, x, y + r, y_stride, cols);
  }
  for (; r < rows; ++r) Block<1, b>(w + r * cols, x, y + r, y_stride, cols);
}

// Block<n, b> for b = 1..4 chosen at run time.
template <int n>
void BlockOf(const c10::BFloat16* w, const c10::BFloat16* x, int64_t b, c10::BFloat16* y,
             int64_t y_stride, int64_t cols) {
  switch (b) {
    case 1: return Block<n, 1>(w, x, y, y_stride, cols);
    case 2: return Block<n, 2>(w, x, y, y_stride, cols);
    case 3: return Block<n, 3>(w, x, y, y_stride, cols);
    default: return Block<n, 4>(w, x, y, y_stride, cols);
  }
}

// More than 4 rows of x: each block of 4 weight rows meets every group of up
// to 4 x rows while it is in L1, so W is read from memory once per call.
void Wide(const c10::BFloat16* w, const c10::BFloat16* x, int64_t batch, c10::BFloat16* y,
          int64_t y_stride, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r += 4) {
    const bool full = r + 4 <= rows;
    for (int64_t t = 0; t < batch; t += 4) {
      const int64_t b = std::min<int64_t>(4, batch - t);
      const c10::BFloat16* xs = x + t * cols;
      c10::BFloat16* ys = y + t * y_stride;
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

bool HasBf16DotProduct() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has;
}

void Bf16Gemv(const c10::BFloat16* w, const c10::BFloat16* x, int64_t batch,
              c10::BFloat16* y, int64_t y_stride, int64_t rows, int64_t cols) {
  switch (batch) {
    case 1: return Rows<1>(w, x, y, y_stride, rows, cols);
    case 2: return Rows<2>(w, x, y, y_stride, rows, cols);
    case 3: return Rows<3>(w, x, y, y_stride, rows, cols);
    case 4: return Rows<4>(w, x, y, y_stride, rows, cols);
  }
  Wide(w, x, batch, y, y_stride, rows, cols);
}

}  // namespace fms
