#include "model/linear.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "model/bf16_gemv.h"

namespace fms {
namespace {

constexpr int64_t kMaxSplitRows = 4;  // Above this BLAS threads well by itself.
constexpr int64_t kRowAlign = 64;
// Rows of x up to which the bf16 kernel beats oneDNN (measured: 1.3-1.5x at
// 1 row, 1.1-1.3x at 2, even at 4; docs/benchmarks.md).
constexpr int64_t kMaxBf16KernelRows = 2;

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

// x [T, in] bf16 -> [T, out] through the AVX512-BF16 kernel, each thread on
// its slice of W's rows.
at::Tensor Bf16Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const at::Tensor input = x.contiguous();
  const int64_t rows = x.size(0), out_features = w.size(0), in_features = w.size(1);
  at::Tensor out = at::empty({rows, out_features}, x.options());
  const auto* weights = w.const_data_ptr<c10::BFloat16>();
  const auto* in = input.const_data_ptr<c10::BFloat16>();
  auto* result = out.mutable_data_ptr<c10::BFloat16>();
  const int64_t grain = Grain(out_features, std::max<int64_t>(1, at::get_num_threads()));
  at::parallel_for(0, out_features, grain, [&](int64_t begin, int64_t end) {
    Bf16Gemv(weights + begin * in_features, in, rows, result + begin, out_features,
             end - begin, in_features);
  });
  return b.defined() ? out.add_(b) : out;
}

}  // namespace

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (UseBf16Gemv(x, w)) return Bf16Linear(x, w, b);
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
