// A loaded adapter on one rank: LoRA matrices or prompt-tuning embeddings,
// read from a PEFT directory (adapter_model.safetensors) or TGIS's
// decoder.pt, checked against the model's shapes and sliced for this rank
// like the weights they modify (tensor_parallel.h).
//
// LoRA stays unmerged: a projection y = W·x becomes y = W·x + B·(A·x)·scale,
// so requests with different adapters, or none, share a batch (lora_batch.h
// applies it). The per-projection matrices are fused the way the model fuses
// its weights: A of q, k and v stacked [r_q + r_k + r_v, hidden] and B
// block-diagonal, so a layer costs four small matmul pairs whatever it targets.

#ifndef FMS_MODEL_ADAPTER_H_
#define FMS_MODEL_ADAPTER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/adapter_config.h"
#include "model/llama_config.h"
#include "model/tensor_parallel.h"

namespace fms {

// delta = (x · a) · b for one fused projection, stored transposed from
// PEFT's A [r, in] and B [out, r] so that both products are plain GEMMs;
// undefined when the adapter does not touch it.
struct LoraPair {
  at::Tensor a;  // [in, rank_sum]: in is the rank's slice for o and down
  at::Tensor b;  // [rank_sum, out]: scale folded in; out is the rank's slice for
                 // qkv and gate_up
};

struct LoraLayer {
  LoraPair qkv;      // out: (heads + 2 * kv_heads) * head_dim of this rank
  LoraPair o;        // row-parallel: a holds this rank's input columns
  LoraPair gate_up;  // out: 2 * intermediate of this rank
  LoraPair down;     // row-parallel
};

struct Adapter {
  std::string id;
  AdapterConfig config;
  std::vector<LoraLayer> layers;  // kLora: one per decoder layer.
  at::Tensor prompt;              // kPromptTuning: [virtual_tokens, hidden]
  int64_t bytes = 0;              // Of this rank's tensors.

  int64_t virtual_tokens() const { return prompt.defined() ? prompt.size(0) : 0; }
};

struct AdapterLoadOptions {
  std::string id;
  std::string dir;  // The adapter's directory (already validated by the caller).
  at::ScalarType dtype = at::kFloat;  // The model's.
  at::Device device = at::kCPU;
};

// Loads the adapter in `options.dir` for a model of `config` split as
// `layout`. Fails, naming the tensor, when a tensor is missing, misshaped,
// not finite, or not one this server applies.
absl::StatusOr<std::shared_ptr<const Adapter>> LoadAdapter(
    const AdapterLoadOptions& options, const LlamaConfig& config, const ShardLayout& layout);

}  // namespace fms

#endif  // FMS_MODEL_ADAPTER_H_
