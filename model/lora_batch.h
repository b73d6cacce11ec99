// The LoRA adapters of one ragged batch (forward_batch.h): which token rows
// each adapter's deltas go to. Requests with different adapters, and requests
// without one, share the batch: every projection runs once for all tokens,
// then each adapter adds B·(A·x) to its own rows, gathered once per adapter
// and layer site (a punica-style gather; docs/benchmarks.md measures it).

#ifndef FMS_MODEL_LORA_BATCH_H_
#define FMS_MODEL_LORA_BATCH_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "model/adapter.h"
#include "model/forward_batch.h"

namespace fms {

enum class LoraSite { kQkv, kO, kGateUp, kDown };

class LoraBatch {
 public:
  LoraBatch(const ForwardBatch& batch, at::Device device);

  bool empty() const { return groups_.empty(); }

  // y [T, out] += each adapter's delta for `site` of `layer` on its rows,
  // from x [T, in] (this rank's slice of in for kO and kDown).
  void Apply(int64_t layer, LoraSite site, const at::Tensor& x, at::Tensor& y) const;

 private:
  struct Group {
    const Adapter* adapter = nullptr;
    at::Tensor rows;  // [n] int64 token rows; undefined when it owns every row
  };
  std::vector<Group> groups_;
};

}  // namespace fms

#endif  // FMS_MODEL_LORA_BATCH_H_
