// LLaMa for one rank in LibTorch: Hugging Face weights, a paged KV cache and
// ragged batches. No requests, no text: token ids in, logits out.

#ifndef FMS_MODEL_LLAMA_MODEL_H_
#define FMS_MODEL_LLAMA_MODEL_H_

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/adapter.h"
#include "model/forward_batch.h"
#include "model/kv_cache.h"
#include "model/linear.h"
#include "model/llama_config.h"
#include "model/rope.h"
#include "model/tensor_parallel.h"
#include "model/weight_source.h"

namespace fms {

struct AttentionPlan;  // model/paged_attention.h

class LoraBatch;

struct LlamaOptions {
  at::ScalarType dtype = at::kFloat;  // kFloat or kBFloat16 on CPU.
  at::Device device = at::kCPU;
  // Benchmark baseline only: plain eager LibTorch, with separate q/k/v and
  // gate/up matmuls and one attention call per sequence. Same results.
  bool eager_baseline = false;
  // The tensor-parallel group this rank belongs to (not owned; must outlive
  // the model); null for a model on one device, unsplit.
  Collectives* collectives = nullptr;
};

// One decoder layer's weights on this rank; projections fused as [q; k; v]
// and [gate; up]. Head and intermediate counts are the rank's (ShardLayout).
struct LayerWeights {
  at::Tensor input_norm;  // [hidden]
  LinearWeight qkv;       // [(heads + 2 * kv_heads) * head_dim, hidden]
  at::Tensor qkv_bias;    // [(heads + 2 * kv_heads) * head_dim] or undefined
  LinearWeight o;         // [hidden, heads * head_dim]: row-parallel
  at::Tensor o_bias;      // [hidden] or undefined; added after the reduction
  at::Tensor post_norm;   // [hidden]
  LinearWeight gate_up;   // [2 * intermediate, hidden]
  at::Tensor gate_up_bias;  // [2 * intermediate] or undefined
  LinearWeight down;      // [hidden, intermediate]: row-parallel
  at::Tensor down_bias;   // [hidden] or undefined; added after the reduction
};

class LlamaModel {
 public:
  // Loads config.json and this rank's slice of the safetensors weights of
  // `model_dir` (all of them without options.collectives).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(
      const std::string& model_dir, const LlamaOptions& options);
  // The same from `config` and any source of weights.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(
      const LlamaConfig& config, const WeightSource& weights, const LlamaOptions& options);

  const LlamaConfig& config() const { return config_; }
  // Checkpoint tensors (this rank's slices) holding NaN or infinity.
  const std::vector<std::string>& non_finite_weights() const { return non_finite_weights_; }
  const LlamaOptions& options() const { return options_; }
  const ShardLayout& layout() const { return layout_; }

  // Loads the adapter in `dir` for this rank (adapter.h).
  absl::StatusOr<std::shared_ptr<const Adapter>> LoadAdapter(const std::string& id,
                                                             const std::string& dir) const;

  // A KV cache shaped for this model.
  KvCache MakeCache(const KvCacheOptions& options) const;

  // Runs `batch`, writing its keys and values into `cache`. Returns fp32
  // logits [NumLogitRows(batch), vocab] on rank 0 and an undefined tensor on
  // the other ranks, which must run the same batches in the same order. The
  // batch must be well formed (the scheduler's invariant): block tables long
  // enough, ids in range.
  at::Tensor Forward(const ForwardBatch& batch, KvCache& cache) const;

 private:
  LlamaModel(LlamaConfig config, ShardLayout layout, LlamaOptions options);

  // ids [T] -> [T, hidden]; each rank looks up its vocabulary rows.
  at::Tensor Embed(const at::Tensor& ids) const;
  // Adds a LoRA delta from x [T, in_slice] to y [T, out] in place.
  using AddDelta = std::function<void(const at::Tensor& x, at::Tensor& y)>;
  // Row-parallel projection: x [T, in_slice], w [out, in_slice] -> [T, out],
  // plus `delta`, summed over the ranks, then the bias.
  at::Tensor RowParallel(const at::Tensor& x, const LinearWeight& w, const at::Tensor& b,
                         const AddDelta& delta) const;
  // hidden [T, hidden]: the rows of virtual-token positions take the
  // prompt-tuning adapters' embeddings.
  void InjectPrompts(const ForwardBatch& batch, at::Tensor& hidden) const;
  // last [R, hidden] -> fp32 logits [R, vocab] on rank 0, undefined elsewhere.
  at::Tensor Logits(const at::Tensor& last) const;

  // True when the elementwise steps run as the loops of decode_kernels.h: on
  // the CPU, in float or bfloat16, not the eager baseline.
  bool UsesRowLoops() const;
  // True when `batch` runs through ForwardDecodes: one-token decodes only,
  // where UsesRowLoops.
  bool UsesDecodePath(const ForwardBatch& batch) const;
  // Forward for such a batch (llama_decode.cc): the same model with the
  // elementwise steps as plain loops and attention reading the cache in place.
  at::Tensor ForwardDecodes(const ForwardBatch& batch, KvCache& cache) const;

  // x [T, hidden] -> [T, hidden], layer `layer` with its LoRA deltas.
  at::Tensor Mlp(int64_t layer, const at::Tensor& x, const LoraBatch& lora) const;
  // x [T, hidden] -> [T, (heads + 2 * kv_heads) * head_dim]
  at::Tensor Qkv(int64_t layer, const at::Tensor& x, const LoraBatch& lora) const;
  // x [T, hidden] -> [T, hidden], fp32 statistics.
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  // Rotates q and k of qkv [T, (heads + 2 * kv_heads) * d] by cos, sin
  // [T, d] (Rope::CosSin of the plan's positions) and writes k and v to layer
  // `layer`'s cache slots; returns q [T, heads, d] (a view of qkv where
  // UsesRowLoops).
  at::Tensor RotateAndWrite(const AttentionPlan& plan, const at::Tensor& cos,
                            const at::Tensor& sin, int64_t layer, at::Tensor& qkv,
                            KvCache& cache) const;
  // hidden += y ([T, hidden] each), in place where UsesRowLoops.
  void AddResidual(at::Tensor& hidden, const at::Tensor& y) const;

  LlamaConfig config_;
  ShardLayout layout_;
  LlamaOptions options_;
  Rope rope_;
  at::Tensor embed_;    // [vocab_rows, hidden]: this rank's vocabulary rows
  LinearWeight lm_head_;  // [vocab_rows, hidden]; w is embed_ itself when tied.
  at::Tensor final_norm_;  // [hidden]
  std::vector<LayerWeights> layers_;

  std::vector<std::string> non_finite_weights_;
  friend class LlamaLoader;
};

}  // namespace fms

#endif  // FMS_MODEL_LLAMA_MODEL_H_
