// oneDNN's matmul over weights reordered once, at load, into its own blocked
// layout, for products of many rows in bf16.
//
// at::linear in bf16 goes to oneDNN too, but reorders W into that layout on
// every call; for the 8 to a few hundred rows of a batched decode or a short
// prompt the reorder is a large share of the product (docs/benchmarks.md,
// "Prepacked bf16 weights"). The ops are LibTorch's own (the ones Inductor's
// CPU freezing uses), called through the dispatcher.

#ifndef FMS_MODEL_ONEDNN_LINEAR_H_
#define FMS_MODEL_ONEDNN_LINEAR_H_

#include <ATen/ATen.h>

namespace fms {

// True when `w` [out, in] should be packed: bf16 on a CPU with AVX512-BF16,
// in a LibTorch built with oneDNN.
bool PacksForOneDnn(const at::Tensor& w);

// w [out, in] -> oneDNN's blocked copy of it (an opaque MKLDNN tensor that
// only OneDnnLinear reads). Only when PacksForOneDnn(w).
at::Tensor PackForOneDnn(const at::Tensor& w);

// x [T, in], packed from w [out, in], b [out] or undefined -> [T, out], dense.
at::Tensor OneDnnLinear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& b);

}  // namespace fms

#endif  // FMS_MODEL_ONEDNN_LINEAR_H_
