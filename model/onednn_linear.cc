#include "model/onednn_linear.h"

#include <ATen/Config.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <optional>
#include <string>

#include "model/bf16_gemv.h"
#include "model/fp32_gemv.h"

namespace fms {
namespace {

// The op's handle; boxed calls, because the C++ types of its string and list
// arguments differ between LibTorch releases while the schema does not.
c10::OperatorHandle Op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

}  // namespace

bool PacksForOneDnn(const at::Tensor& w) {
  if (!AT_MKLDNN_ENABLED() || !w.device().is_cpu() || w.dim() != 2) return false;
  if (w.scalar_type() == at::kBFloat16) return HasBf16DotProduct();
  return w.scalar_type() == at::kFloat && HasAvx512();
}

at::Tensor PackForOneDnn(const at::Tensor& w) {
  TORCH_CHECK(PacksForOneDnn(w), "PackForOneDnn: a 2-D bf16 or fp32 CPU weight");
  static const c10::OperatorHandle reorder = Op("mkldnn::_reorder_linear_weight");
  // The batch size is a hint for the layout; one layout serves every batch.
  constexpr int64_t kLayoutBatch = 64;
  torch::jit::Stack stack{w.contiguous(), std::optional<int64_t>(kLayoutBatch)};
  reorder.callBoxed(&stack);
  return stack.at(0).toTensor();
}

at::Tensor OneDnnLinear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& b) {
  static const c10::OperatorHandle linear = Op("mkldnn::_linear_pointwise");
  torch::jit::Stack stack{x.contiguous(),
                          packed,
                          b.defined() ? std::optional<at::Tensor>(b) : std::nullopt,
                          std::string("none"),
                          c10::List<std::optional<at::Scalar>>(),
                          std::optional<std::string>()};
  linear.callBoxed(&stack);
  return stack.at(0).toTensor();  // [T, out]
}

}  // namespace fms
