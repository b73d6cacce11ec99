#include "model/lora_batch.h"

#include <map>

namespace fms {

LoraBatch::LoraBatch(const ForwardBatch& batch, at::Device device) {
  std::map<const Adapter*, std::vector<int64_t>> rows;
  int64_t first = 0, total = 0;
  for (const SequenceChunk& s : batch.sequences) {
    const Adapter* a = s.adapter;
    if (a != nullptr && a->config.kind == AdapterKind::kLora) {
      std::vector<int64_t>& r = rows[a];
      for (int64_t i = 0; i < s.num_tokens; ++i) r.push_back(first + i);
    }
    first += s.num_tokens;
  }
  total = first;
  for (auto& [adapter, r] : rows) {
    Group g{.adapter = adapter};
    if (static_cast<int64_t>(r.size()) != total) {
      g.rows = at::tensor(r, at::kLong).to(device);
    }
    groups_.push_back(std::move(g));
  }
}

void LoraBatch::Apply(int64_t layer, LoraSite site, const at::Tensor& x, at::Tensor& y) const {
  for (const Group& g : groups_) {
    const LoraLayer& l = g.adapter->layers[layer];
    const LoraPair& p = site == LoraSite::kQkv    ? l.qkv
                        : site == LoraSite::kO    ? l.o
                        : site == LoraSite::kGateUp ? l.gate_up
                                                    : l.down;
    if (!p.a.defined()) continue;
    if (!g.rows.defined()) {
      y.addmm_(at::mm(x, p.a), p.b);  // [T, out] += [T, r] [r, out]
      continue;
    }
    const at::Tensor xs = x.index_select(0, g.rows);        // [n, in]
    y.index_add_(0, g.rows, at::mm(at::mm(xs, p.a), p.b));  // [n, out]
  }
}

}  // namespace fms
