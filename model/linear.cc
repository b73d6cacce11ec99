#include "model/linear.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "model/bf16_gemv.h"
#include "model/fp32_gemv.h"
#include "model/onednn_linear.h"

namespace fms {
namespace {

constexpr int64_t kMaxSplitRows = 4;  // Above this BLAS threads well by itself.
constexpr int64_t kRowAlign = 64;
// Rows of x up to which the AVX-512 kernels beat oneDNN (bf16) and MKL's
// sgemm (fp32): SmolLM2 decode steps on one thread, once the kernels' register
// blocks stayed in registers (docs/benchmarks.md, "Register blocks"). bf16:
// 22-23 against 31-46 ms a step at 8 rows, 32-40 against 48-59 at 16, a tie
// at 32 (66-78 against 70-88), 128 against 120 at 64. fp32: 52-55 against
// 111-113 ms at 16 rows, 160 against 283 at 64. Past 4 rows each block of W
// meets every row of x while it is in L1.
constexpr int64_t kMaxBf16KernelRows = 32;
constexpr int64_t kMaxFp32KernelRows = 64;

at::Tensor Plain(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

// Rows of W per thread: an even share, rounded up to kRowAlign.
int64_t Grain(int64_t out_features, int64_t threads) {
  return (out_features / threads + kRowAlign - 1) / kRowAlign * kRowAlign;
}

bool UseBf16Gemv(const at::Tensor& x, const at::Tensor& w) {
  return x.device().is_cpu() && x.scalar_type() == at::kBFloat16 &&
         w.scalar_type() == at::kBFloat16 && x.size(0) <= kMaxBf16KernelRows &&
         w.is_contiguous() && HasBf16DotProduct();
}

bool UseFp32Gemv(const at::Tensor& x, const at::Tensor& w) {
  return x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         w.scalar_type() == at::kFloat && x.size(0) <= kMaxFp32KernelRows &&
         w.is_contiguous() && HasAvx512();
}

void Gemv(const c10::BFloat16* w, const c10::BFloat16* x, int64_t batch, c10::BFloat16* y,
          int64_t y_stride, int64_t rows, int64_t cols) {
  Bf16Gemv(w, x, batch, y, y_stride, rows, cols);
}
void Gemv(const float* w, const float* x, int64_t batch, float* y, int64_t y_stride,
          int64_t rows, int64_t cols) {
  Fp32Gemv(w, x, batch, y, y_stride, rows, cols);
}

// x [T, in] -> [T, out] through the AVX-512 kernel of E, each thread on its
// slice of W's rows.
template <typename E>
at::Tensor KernelLinear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const at::Tensor input = x.contiguous();
  const int64_t rows = x.size(0), out_features = w.size(0), in_features = w.size(1);
  at::Tensor out = at::empty({rows, out_features}, x.options());
  const E* weights = w.const_data_ptr<E>();
  const E* in = input.const_data_ptr<E>();
  E* result = out.mutable_data_ptr<E>();
  const int64_t grain = Grain(out_features, std::max<int64_t>(1, at::get_num_threads()));
  at::parallel_for(0, out_features, grain, [&](int64_t begin, int64_t end) {
    Gemv(weights + begin * in_features, in, rows, result + begin, out_features, end - begin,
         in_features);
  });
  return b.defined() ? out.add_(b) : out;
}

}  // namespace

LinearWeight MakeLinearWeight(at::Tensor w) {
  LinearWeight weight{.w = std::move(w)};
  if (PacksForOneDnn(weight.w)) weight.packed = PackForOneDnn(weight.w);
  return weight;
}

// Up to the kernels' rows the kernels win (a packed bf16 product at 8 and 16
// rows tied or lost to them); above, the packed product beats at::linear's
// reorder per call (bf16: SmolLM2 steps of 64 rows 92-113 -> 76-95 ms) and
// MKL's sgemm (fp32: a 107-token prompt's projections 2.5x faster), docs/
// benchmarks.md, "Prepacked bf16 weights" and "Prepacked fp32 weights".
at::Tensor Linear(const at::Tensor& x, const LinearWeight& w, const at::Tensor& b) {
  const int64_t kernel_rows =
      x.scalar_type() == at::kFloat ? kMaxFp32KernelRows : kMaxBf16KernelRows;
  if (w.packed.defined() && x.size(0) > kernel_rows) return OneDnnLinear(x, w.packed, b);
  return Linear(x, w.w, b);
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (UseBf16Gemv(x, w)) return KernelLinear<c10::BFloat16>(x, w, b);
  if (UseFp32Gemv(x, w)) return KernelLinear<float>(x, w, b);
  const int64_t threads = at::get_num_threads();
  const int64_t out_features = w.size(0);
  if (!x.device().is_cpu() || x.size(0) > kMaxSplitRows || threads < 2 ||
      out_features < threads * kRowAlign) {
    return Plain(x, w, b);
  }
  // [T, out]: each thread writes the columns of its rows of W.
  at::Tensor out = at::empty({x.size(0), out_features}, x.options());
  const int64_t grain = Grain(out_features, threads);
  // InferenceMode is thread-local: carry the caller's into the pool threads.
  const bool inference = c10::InferenceMode::is_enabled();
  at::parallel_for(0, out_features, grain, [&](int64_t begin, int64_t end) {
    c10::InferenceMode guard(inference);
    const int64_t n = end - begin;
    const at::Tensor bias = b.defined() ? b.narrow(0, begin, n) : at::Tensor();
    out.narrow(1, begin, n).copy_(Plain(x, w.narrow(0, begin, n), bias));
  });
  return out;
}

}  // namespace fms
