// Tensor parallelism for one rank, Megatron style (shared/docs/
// llama-and-checkpoints.md section 3): which slice of every weight a rank
// holds, and the collectives the model needs. sharding/ implements the
// collectives (Gloo on CPU, NCCL on CUDA); the model only sees this interface.
//
//   q/k/v, gate/up      column-parallel: rank r holds its heads / columns
//   o_proj, down_proj   row-parallel: partial sums, then AllReduceSum
//   embedding, lm_head  split over the vocabulary; logits gathered on rank 0
//   RMSNorm weights     replicated
//
// Kv heads are split like query heads when there are at least as many as
// ranks, else replicated: rank r uses kv head r / (world / kv_heads).

#ifndef FMS_MODEL_TENSOR_PARALLEL_H_
#define FMS_MODEL_TENSOR_PARALLEL_H_

#include <ATen/ATen.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "model/llama_config.h"

namespace fms {

// The collectives of one tensor-parallel group. Every rank calls them in the
// same order with tensors of the same shape and dtype. They do not return on
// failure (a lost peer): the implementation ends the process, and the front
// end restarts the whole group.
class Collectives {
 public:
  virtual ~Collectives() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Sums `tensor` (contiguous) over the ranks, in place, on every rank.
  virtual void AllReduceSum(at::Tensor& tensor) = 0;
  // part [R, n] on every rank -> [R, world_size * n] on rank 0, the ranks'
  // parts side by side in rank order; an undefined tensor on other ranks.
  virtual at::Tensor GatherColumnsToRank0(const at::Tensor& part) = 0;
};

// The slice of the model that one rank holds.
struct ShardLayout {
  int rank = 0;
  int world_size = 1;
  int64_t heads = 0;             // Query heads on this rank.
  int64_t first_head = 0;
  int64_t kv_heads = 0;          // Kv heads on this rank.
  int64_t first_kv_head = 0;
  int64_t intermediate = 0;      // MLP hidden columns on this rank.
  int64_t first_intermediate = 0;
  int64_t vocab_rows = 0;        // Embedding / lm_head rows: ceil(vocab / world).
  int64_t first_vocab_row = 0;
  int64_t real_vocab_rows = 0;   // Rows that exist; the rest are zero padding.
};

// Fails, naming the config field, when the model cannot be split
// `world_size` ways: heads and intermediate_size must divide evenly, and kv
// heads must divide or be divided by world_size.
absl::StatusOr<ShardLayout> MakeShardLayout(const LlamaConfig& config, int rank,
                                            int world_size);

}  // namespace fms

#endif  // FMS_MODEL_TENSOR_PARALLEL_H_
