// The input of one model forward: a ragged batch of sequence chunks with no
// padding. Each sequence contributes either a prompt chunk (prefill, many
// tokens) or one decode token; its tokens occupy positions
// [context_len, context_len + num_tokens) and its KV entries live in the
// cache blocks its block table names (chosen by the scheduler, never by the
// model).

#ifndef FMS_MODEL_FORWARD_BATCH_H_
#define FMS_MODEL_FORWARD_BATCH_H_

#include <cstdint>
#include <vector>

namespace fms {

struct Adapter;

struct SequenceChunk {
  // Tokens of this sequence in this step (>= 1).
  int64_t num_tokens = 0;
  // Tokens of this sequence already in the KV cache before this step.
  int64_t context_len = 0;
  // Cache block ids covering positions [0, context_len + num_tokens):
  // position p lives in block block_table[p / block_size].
  std::vector<int32_t> block_table;
  // Return logits for every token of the chunk (prompt logprobs), not only
  // the last one.
  bool all_logits = false;
  // The sequence's adapter (adapter.h), or null for the base model. A
  // prompt-tuning adapter's virtual tokens hold positions [0, n): the chunk's
  // tokens at those positions are replaced by its embeddings.
  const Adapter* adapter = nullptr;
};

struct ForwardBatch {
  // The chunks' token ids, concatenated in `sequences` order.
  std::vector<int32_t> token_ids;
  std::vector<SequenceChunk> sequences;
};

// Rows of the logits a forward returns for `batch`: per sequence, num_tokens
// rows when all_logits, else one.
int64_t NumLogitRows(const ForwardBatch& batch);

}  // namespace fms

#endif  // FMS_MODEL_FORWARD_BATCH_H_
