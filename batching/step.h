// The seam between the scheduler and the model: one StepPlan per iteration
// goes to every worker (SPMD), rank 0 answers with a StepResult. Plain data,
// no LibTorch, no gRPC, no threads; step_codec.h turns both into protobuf
// messages for the process boundary.
//
// A sequence is sent in full once (NewSequence: prompt, sampling parameters)
// and from then on as a diff (ScheduledChunk: which tokens to process at which
// positions, which blocks were added). The worker keeps each sequence's
// prompt, generated tokens and block table until the plan lists it in
// `finished`.

#ifndef FMS_BATCHING_STEP_H_
#define FMS_BATCHING_STEP_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "batching/sampling_params.h"

namespace fms {

using SequenceId = int64_t;

// A sequence the workers have not seen yet. Preemption does not make a
// sequence new again: the workers keep its prompt and generated tokens and
// only drop its block table.
struct NewSequence {
  SequenceId id = 0;
  // Token ids, BOS included. With a prompt-tuning adapter its virtual tokens
  // come first, as placeholders (token 0) the worker's model replaces.
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  // The adapter the worker applies (Engine::LoadAdapter's id); empty: none.
  std::string adapter;

  bool operator==(const NewSequence&) const = default;
};

// One sequence's work in one step: tokens [context_len, context_len + n).
struct ScheduledChunk {
  SequenceId id = 0;
  // The tokens to process: a prompt chunk (prefill), a recompute chunk after
  // preemption, or the last sampled token (decode).
  std::vector<int32_t> token_ids;
  int64_t context_len = 0;  // Positions already in the KV cache.
  // Prefix caching: full blocks another sequence (or this one, before a
  // preemption) computed, appended to the block table first; their positions
  // count in context_len. Shared, so never written.
  std::vector<int32_t> cached_blocks;
  // Fresh block ids appended to the sequence's block table next.
  std::vector<int32_t> new_blocks;
  // Sample a token after this chunk (false for a non-final prompt chunk).
  bool sample = true;
  // Return logprob / rank / top-n of the prompt tokens of this chunk (TGIS
  // input_tokens); never set again for a recompute after preemption.
  bool prompt_details = false;

  bool operator==(const ScheduledChunk&) const = default;
};

struct StepPlan {
  uint64_t step = 0;  // Increments by one per plan.
  std::vector<NewSequence> new_sequences;
  std::vector<ScheduledChunk> chunks;   // In batch order.
  // Applied before the chunks run: forget these sequences entirely ...
  std::vector<SequenceId> finished;
  // ... and drop these sequences' block tables (their blocks may already
  // belong to others in this step); they come back later as chunks from
  // context 0.
  std::vector<SequenceId> preempted;

  bool operator==(const StepPlan&) const = default;
};

// Logprob, rank and top-n of one token; fields unset when not requested.
struct TokenDetails {
  float logprob = 0;
  uint32_t rank = 0;
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob)

  bool operator==(const TokenDetails&) const = default;
};

// What one sampled chunk produced.
struct SequenceOutput {
  SequenceId id = 0;
  int32_t token = 0;
  TokenDetails details;
  // Details of the prompt tokens of the sequence's prompt_details chunks, in
  // position order, reported with the sampled token that ends the prompt;
  // the first prompt position has NaN logprob and rank 0.
  std::vector<TokenDetails> prompt_details;
  // The model's logits for this sequence held NaN or infinity (damaged
  // weights, overflow): no token was sampled; the sequence ends with an error.
  bool non_finite_logits = false;

  bool operator==(const SequenceOutput&) const = default;
};

// Where rank 0's time of one step went, in microseconds (the front end
// exports them as fms_step_phase_seconds; what the batcher's step time holds
// beyond their sum is the RPC and the other ranks).
struct StepTimings {
  int64_t decode_us = 0;   // The plan out of protobuf.
  int64_t wait_us = 0;     // Handing the step to the compute thread.
  int64_t prepare_us = 0;  // Checking the plan, building the batch.
  int64_t forward_us = 0;  // The model, logits copied to the host.
  int64_t sample_us = 0;   // Sampling and details.
  int64_t encode_us = 0;   // The result into protobuf.

  bool operator==(const StepTimings&) const = default;
};

struct StepResult {
  uint64_t step = 0;
  std::vector<SequenceOutput> outputs;  // One per chunk with sample = true, in order.
  StepTimings timings;

  bool operator==(const StepResult&) const = default;
};

}  // namespace fms

#endif  // FMS_BATCHING_STEP_H_
