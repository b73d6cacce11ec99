// LLaMa for one rank in LibTorch: Hugging Face weights, a paged KV cache and
// ragged batches. No requests, no text: token ids in, logits out.

#ifndef FMS_MODEL_LLAMA_MODEL_H_
#define FMS_MODEL_LLAMA_MODEL_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/forward_batch.h"
#include "model/kv_cache.h"
#include "model/llama_config.h"
#include "model/rope.h"

namespace fms {

struct LlamaOptions {
  at::ScalarType dtype = at::kFloat;  // kFloat or kBFloat16 on CPU.
  at::Device device = at::kCPU;
  // Benchmark baseline only: plain eager LibTorch, with separate q/k/v and
  // gate/up matmuls and one attention call per sequence. Same results.
  bool eager_baseline = false;
};

// One decoder layer's weights; projections fused as [q; k; v] and [gate; up].
struct LayerWeights {
  at::Tensor input_norm;  // [hidden]
  at::Tensor qkv;         // [(heads + 2 * kv_heads) * head_dim, hidden]
  at::Tensor qkv_bias;    // [(heads + 2 * kv_heads) * head_dim] or undefined
  at::Tensor o;           // [hidden, heads * head_dim]
  at::Tensor o_bias;      // [hidden] or undefined
  at::Tensor post_norm;   // [hidden]
  at::Tensor gate_up;     // [2 * intermediate, hidden]
  at::Tensor gate_up_bias;  // [2 * intermediate] or undefined
  at::Tensor down;        // [hidden, intermediate]
  at::Tensor down_bias;   // [hidden] or undefined
};

class LlamaModel {
 public:
  // Loads config.json and the safetensors weights of `model_dir`.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(
      const std::string& model_dir, const LlamaOptions& options);

  const LlamaConfig& config() const { return config_; }
  const LlamaOptions& options() const { return options_; }

  // A KV cache shaped for this model.
  KvCache MakeCache(const KvCacheOptions& options) const;

  // Runs `batch`, writing its keys and values into `cache`. Returns fp32
  // logits [NumLogitRows(batch), vocab]. The batch must be well formed
  // (the scheduler's invariant): block tables long enough, ids in range.
  at::Tensor Forward(const ForwardBatch& batch, KvCache& cache) const;

 private:
  LlamaModel(LlamaConfig config, LlamaOptions options);

  // x [T, hidden] -> [T, hidden]
  at::Tensor Mlp(const LayerWeights& w, const at::Tensor& x) const;
  // x [T, hidden] -> [T, (heads + 2 * kv_heads) * head_dim]
  at::Tensor Qkv(const LayerWeights& w, const at::Tensor& x) const;
  // x [T, hidden] -> [T, hidden], fp32 statistics.
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;

  LlamaConfig config_;
  LlamaOptions options_;
  Rope rope_;
  at::Tensor embed_;    // [vocab, hidden]
  at::Tensor lm_head_;  // [vocab, hidden]; embed_ itself when tied.
  at::Tensor final_norm_;  // [hidden]
  std::vector<LayerWeights> layers_;

  friend class LlamaLoader;
};

}  // namespace fms

#endif  // FMS_MODEL_LLAMA_MODEL_H_
