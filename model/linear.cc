#include "model/linear.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

namespace fms {
namespace {

constexpr int64_t kMaxSplitRows = 4;  // Above this BLAS threads well by itself.
constexpr int64_t kRowAlign = 64;

at::Tensor Plain(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

}  // namespace

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const int64_t threads = at::get_num_threads();
  const int64_t out_features = w.size(0);
  if (!x.device().is_cpu() || x.size(0) > kMaxSplitRows || threads < 2 ||
      out_features < threads * kRowAlign) {
    return Plain(x, w, b);
  }
  // [T, out]: each thread writes the columns of its rows of W.
  at::Tensor out = at::empty({x.size(0), out_features}, x.options());
  const int64_t grain = (out_features / threads + kRowAlign - 1) / kRowAlign * kRowAlign;
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
