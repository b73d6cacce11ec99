// The loops around a GEMV kernel's register block, shared by the bf16 and
// fp32 kernels (bf16_gemv.h, fp32_gemv.h): which block shape serves which
// batch, and the order in which blocks of W meet rows of x.
//
// `Kernel` provides `template <int n, int b> static void Block(const E* w,
// const E* x, E* y, int64_t y_stride, int64_t cols)`: y[t * y_stride + i] =
// w row i . x row t for n rows of w and b (1 to 4) rows of x.

#ifndef FMS_MODEL_GEMV_BLOCKING_H_
#define FMS_MODEL_GEMV_BLOCKING_H_

#include <algorithm>
#include <cstdint>

namespace fms::gemv_internal {

// Kernel::Block<n, b> for b = 1..4 chosen at run time.
template <typename Kernel, int n, typename E>
void BlockOf(const E* w, const E* x, int64_t b, E* y, int64_t y_stride, int64_t cols) {
  switch (b) {
    case 1: return Kernel::template Block<n, 1>(w, x, y, y_stride, cols);
    case 2: return Kernel::template Block<n, 2>(w, x, y, y_stride, cols);
    case 3: return Kernel::template Block<n, 3>(w, x, y, y_stride, cols);
    default: return Kernel::template Block<n, 4>(w, x, y, y_stride, cols);
  }
}

// Up to 4 rows of x: rows of w per block as many as the 32 vector registers
// allow next to n * b accumulators (measured: 8 beat 4 and 2 at batch 1,
// docs/benchmarks.md).
template <typename Kernel, int b, typename E>
void Rows(const E* w, const E* x, E* y, int64_t y_stride, int64_t rows, int64_t cols) {
  constexpr int n = b <= 2 ? 8 : 4;
  int64_t r = 0;
  for (; r + n <= rows; r += n) {
    Kernel::template Block<n, b>(w + r * cols, x, y + r, y_stride, cols);
  }
  for (; r < rows; ++r) Kernel::template Block<1, b>(w + r * cols, x, y + r, y_stride, cols);
}

// More than 4 rows of x: each block of 4 weight rows meets every group of up
// to 4 x rows while it is in L1, so W is read from memory once per call.
template <typename Kernel, typename E>
void Wide(const E* w, const E* x, int64_t batch, E* y, int64_t y_stride, int64_t rows,
          int64_t cols) {
  for (int64_t r = 0; r < rows; r += 4) {
    const bool full = r + 4 <= rows;
    for (int64_t t = 0; t < batch; t += 4) {
      const int64_t b = std::min<int64_t>(4, batch - t);
      const E* xs = x + t * cols;
      E* ys = y + t * y_stride;
      if (full) {
        BlockOf<Kernel, 4>(w + r * cols, xs, b, ys + r, y_stride, cols);
        continue;
      }
      for (int64_t i = r; i < rows; ++i) {
        BlockOf<Kernel, 1>(w + i * cols, xs, b, ys + i, y_stride, cols);
      }
    }
  }
}

// y = x W^T for any number of rows of x (see the kernels' headers).
template <typename Kernel, typename E>
void Gemv(const E* w, const E* x, int64_t batch, E* y, int64_t y_stride, int64_t rows,
          int64_t cols) {
  switch (batch) {
    case 1: return Rows<Kernel, 1>(w, x, y, y_stride, rows, cols);
    case 2: return Rows<Kernel, 2>(w, x, y, y_stride, rows, cols);
    case 3: return Rows<Kernel, 3>(w, x, y, y_stride, rows, cols);
    case 4: return Rows<Kernel, 4>(w, x, y, y_stride, rows, cols);
  }
  Wide<Kernel>(w, x, batch, y, y_stride, rows, cols);
}

}  // namespace fms::gemv_internal

#endif  // FMS_MODEL_GEMV_BLOCKING_H_
