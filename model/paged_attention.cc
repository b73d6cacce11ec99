#include "model/paged_attention.h"

#include <algorithm>

namespace fms {
namespace {

int64_t Slot(const SequenceChunk& s, int64_t position, int64_t block_size) {
  const int64_t block = position / block_size;
  TORCH_CHECK(block < static_cast<int64_t>(s.block_table.size()),
              "block table too short for position ", position);
  return static_cast<int64_t>(s.block_table[block]) * block_size +
         position % block_size;
}

at::Tensor ToDevice(const std::vector<int64_t>& values, at::Device device) {
  return at::tensor(values, at::kLong).to(device);
}

void AddDecodes(const std::vector<std::pair<int64_t, const SequenceChunk*>>& decodes,
                int64_t block_size, at::Device device, AttentionPlan* plan) {
  if (decodes.empty()) return;
  int64_t max_keys = 0;
  for (const auto& [row, s] : decodes) max_keys = std::max(max_keys, s->context_len + 1);
  const int64_t batch = static_cast<int64_t>(decodes.size());
  std::vector<int64_t> rows, slots(batch * max_keys, 0);
  std::vector<uint8_t> mask(batch * max_keys, 0);
  for (int64_t b = 0; b < batch; ++b) {
    const auto& [row, s] = decodes[b];
    rows.push_back(row);
    for (int64_t p = 0; p <= s->context_len; ++p) {
      slots[b * max_keys + p] = Slot(*s, p, block_size);
      mask[b * max_keys + p] = 1;
    }
  }
  plan->decode_rows = ToDevice(rows, device);
  plan->decode_key_slots = ToDevice(slots, device).view({batch, max_keys});
  plan->decode_mask = at::tensor(at::ArrayRef<uint8_t>(mask), at::kByte)
                          .to(at::kBool)
                          .view({batch, 1, 1, max_keys})
                          .to(device);
}

PrefillChunk MakePrefill(const SequenceChunk& s, int64_t first_row,
                         int64_t block_size, at::Device device) {
  PrefillChunk chunk;
  chunk.first_row = first_row;
  chunk.num_tokens = s.num_tokens;
  const int64_t keys = s.context_len + s.num_tokens;
  std::vector<int64_t> slots(keys);
  for (int64_t p = 0; p < keys; ++p) slots[p] = Slot(s, p, block_size);
  chunk.key_slots = ToDevice(slots, device);
  if (s.context_len > 0) {
    // Query i sits at position context_len + i and sees keys 0..that position.
    const at::Tensor query_pos =
        at::arange(s.context_len, keys, at::kLong).unsqueeze(1);
    chunk.mask = (at::arange(keys, at::kLong).unsqueeze(0) <= query_pos).to(device);
  }
  return chunk;
}

}  // namespace

AttentionPlan BuildAttentionPlan(const ForwardBatch& batch, int64_t block_size,
                                 at::Device device, bool batch_decodes) {
  AttentionPlan plan;
  std::vector<int64_t> positions, write_slots, logit_rows;
  std::vector<std::pair<int64_t, const SequenceChunk*>> decodes;
  int64_t row = 0;
  for (const SequenceChunk& s : batch.sequences) {
    TORCH_CHECK(s.num_tokens > 0 && s.context_len >= 0, "empty sequence chunk");
    for (int64_t i = 0; i < s.num_tokens; ++i) {
      positions.push_back(s.context_len + i);
      write_slots.push_back(Slot(s, s.context_len + i, block_size));
      if (s.all_logits || i == s.num_tokens - 1) logit_rows.push_back(row + i);
    }
    if (s.num_tokens == 1 && batch_decodes) {
      decodes.emplace_back(row, &s);
    } else {
      plan.prefills.push_back(MakePrefill(s, row, block_size, device));
    }
    row += s.num_tokens;
  }
  TORCH_CHECK(row == static_cast<int64_t>(batch.token_ids.size()),
              "token count does not match the chunks");
  plan.positions = ToDevice(positions, device);
  plan.write_slots = ToDevice(write_slots, device);
  plan.logit_rows = ToDevice(logit_rows, device);
  AddDecodes(decodes, block_size, device, &plan);
  return plan;
}

at::Tensor PagedAttention(const AttentionPlan& plan, const at::Tensor& q,
                          const at::Tensor& key_cache,
                          const at::Tensor& value_cache) {
  const bool gqa = q.size(1) != key_cache.size(1);
  at::Tensor out = at::empty_like(q);  // [T, heads, head_dim]
  for (const PrefillChunk& chunk : plan.prefills) {
    // [1, heads, n, d] against [1, kv_heads, keys, d]
    const at::Tensor query =
        q.narrow(0, chunk.first_row, chunk.num_tokens).transpose(0, 1).unsqueeze(0);
    const at::Tensor keys =
        key_cache.index_select(0, chunk.key_slots).transpose(0, 1).unsqueeze(0);
    const at::Tensor values =
        value_cache.index_select(0, chunk.key_slots).transpose(0, 1).unsqueeze(0);
    const bool causal = !chunk.mask.defined();
    const std::optional<at::Tensor> mask =
        causal ? std::nullopt : std::optional<at::Tensor>(chunk.mask);
    const at::Tensor result = at::scaled_dot_product_attention(
        query, keys, values, mask, 0.0, causal, std::nullopt, gqa);
    out.narrow(0, chunk.first_row, chunk.num_tokens)
        .copy_(result.squeeze(0).transpose(0, 1));
  }
  if (plan.decode_rows.defined()) {
    const int64_t batch = plan.decode_key_slots.size(0);
    const int64_t max_keys = plan.decode_key_slots.size(1);
    // [B, heads, 1, d] against [B, kv_heads, max_keys, d]
    const at::Tensor query = q.index_select(0, plan.decode_rows).unsqueeze(2);
    const at::Tensor flat = plan.decode_key_slots.view({-1});
    // On CPU, PyTorch's flash attention runs bf16/fp16 with one query row per
    // sequence through MKL's reduced-precision GEMV, 3-5x slower than its fp32
    // kernel on the same shapes even counting the conversions
    // (docs/benchmarks.md, "Decode attention in bf16"): compute in fp32 there.
    const at::ScalarType compute =
        q.device().is_cpu() && at::isReducedFloatingType(q.scalar_type())
            ? at::kFloat
            : q.scalar_type();
    const auto gather = [&](const at::Tensor& cache) {
      return cache.index_select(0, flat)
          .view({batch, max_keys, cache.size(1), cache.size(2)})
          .transpose(1, 2)
          .to(compute);
    };
    const at::Tensor result = at::scaled_dot_product_attention(
        query.to(compute), gather(key_cache), gather(value_cache), plan.decode_mask,
        0.0, false, std::nullopt, gqa);
    out.index_copy_(0, plan.decode_rows, result.squeeze(2).to(q.scalar_type()));
  }
  return out;
}

}  // namespace fms
