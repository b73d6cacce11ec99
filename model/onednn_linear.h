// oneDNN's matmul over weights reordered once, at load, into its own blocked
// layout, for products of many rows in bf16 and fp32.
//
// at::linear in bf16 goes to oneDNN too, but reorders W into that layout on
// every call; for the tens to hundreds of rows of a batched decode or a short
// prompt the reorder is a large share of the product. In fp32 at::linear is
// MKL's sgemm, which ran at 40 % of oneDNN's speed on this project's AMD CPU
// (docs/benchmarks.md, "Prepacked bf16 weights" and "Prepacked fp32
// weights"). The ops are LibTorch's own (the ones Inductor's CPU freezing
// uses), called through the dispatcher.

#ifndef FMS_MODEL_ONEDNN_LINEAR_H_
#define FMS_MODEL_ONEDNN_LINEAR_H_

#include <ATen/ATen.h>

namespace fms {

// True when `w` [out, in] should be packed, in a LibTorch built with oneDNN:
// bf16 on a CPU with AVX512-BF16, fp32 on one with AVX-512F.
bool PacksForOneDnn(const at::Tensor& w);

// w [out, in] -> oneDNN's blocked copy of it (an opaque MKLDNN tensor that
// only OneDnnLinear reads). Only when PacksForOneDnn(w).
at::Tensor PackForOneDnn(const at::Tensor& w);

// x [T, in], packed from w [out, in], b [out] or undefined -> [T, out], dense.
at::Tensor OneDnnLinear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& b);

}  // namespace fms

#endif  // FMS_MODEL_ONEDNN_LINEAR_H_
