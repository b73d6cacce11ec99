// Scheduler: iteration-level (Orca / vLLM style) continuous batching.
//
// Theory. Every step has a token budget (max_tokens_per_step) and at most
// max_batch_size sequences. A sequence's pending tokens are those of its
// prompt (and, after preemption, of its generated text) not yet in the KV
// cache; one pending token is a decode. Budget goes, in this order, to
//   1. running decodes, oldest first, so decodes keep flowing;
//   2. waiting requests that have waited max_waiting_tokens steps or more
//      (TGIS's guarantee), FIFO;
//   3. running prompt chunks, oldest first;
//   4. waiting requests, FIFO, with no queue jumping.
// A long prompt is split into chunks that fit the remaining budget. While
// decodes run, prompt chunks get at most what keeps the step within
// mixed_step_ratio decode-only steps (step_cost.h, learned from the step
// times the batcher reports), so streams do not stall behind a prefill.
//
// Bursts (hold_burst_first_tokens): when the prompt work ready to run is more
// than a step's token budget (max_tokens_per_step less the decodes; not the
// mixed_step_ratio cap, which spreads a lone prompt over steps on purpose and
// would hold every arrival beside a stream), prompts that have produced no
// token yet are computed up to their last token and wait there; when the rest of the work
// fits in one step, their last tokens run together and the streams start
// together. Otherwise the first prompts of a burst would start streaming and
// then stall for every later prompt's chunk (64 closed-loop clients at once:
// ITL p99 4x p50; docs/benchmarks.md, "First tokens of a burst together").
// A sequence is held at most max_waiting_tokens steps. Before a
// chunk runs, its sequence reserves the blocks the chunk needs. When a running
// sequence cannot get blocks, the youngest running sequence not yet scheduled
// in this step is preempted: its blocks are freed and it goes back to the
// front of the queue, to be recomputed from its prompt and generated tokens
// later (never corrupted). Waiting requests never preempt.
//
// Automatic prefix caching (enable_prefix_caching, as in vLLM): a block
// whose positions are all computed gets a content key (prefix_hash.h: the
// adapter and every token up to its end). At admission, a sequence takes the
// longest run of its full blocks whose keys are cached (held by others or
// free but not yet reused) and starts computing after them; the block of its
// last token is always computed, so there are logits to sample from. Cached
// blocks count as free and are evicted least recently used first. A request
// that asks for prompt-token details computes its whole prompt.
//
// A request whose time limit passes while it waits behind other work ends
// with TIME_LIMIT and no token; one that can start at its first plan always
// gets at least one token, as in TGIS.
//
// Finishing and cancelling take effect at the next Schedule, which emits the
// final event and frees the blocks; workers hear of it in `finished`, and of
// preemptions in `preempted`.
// Scheduler thread only.

#ifndef FMS_BATCHING_SCHEDULER_H_
#define FMS_BATCHING_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "batching/block_allocator.h"
#include "batching/prefix_hash.h"
#include "batching/request.h"
#include "batching/step.h"
#include "batching/step_cost.h"

namespace fms {

struct SchedulerConfig {
  int64_t max_batch_size = 12;       // Sequences per step (MAX_BATCH_SIZE).
  int64_t max_tokens_per_step = 512;  // Token budget per step (MAX_NUM_BATCHED_TOKENS).
  // A step with prompt tokens beside decodes costs at most this many
  // decode-only steps; <= 1: no such limit.
  double mixed_step_ratio = 0;
  int64_t max_waiting_tokens = 24;   // Steps after which a waiting request goes first.
  int64_t num_blocks = 0;            // KV cache blocks.
  int64_t block_size = 16;           // Token positions per block.
  bool enable_prefix_caching = false;  // Reuse cached full blocks at admission.
  bool hold_burst_first_tokens = false;  // A burst's streams start together (above).
  std::vector<int32_t> eos_token_ids;
};

// Counters for metrics (tgi_* families).
struct SchedulerStats {
  int64_t waiting = 0;
  int64_t running = 0;
  int64_t free_blocks = 0;
  int64_t preemptions = 0;       // Since start.
  int64_t tokens_last_step = 0;  // Tokens in the last plan.
  int64_t cached_blocks = 0;     // Blocks with a content key, held or free.
  int64_t prefix_queries = 0;    // Since start: tokens of admitted sequences looked up ...
  int64_t prefix_hits = 0;       // ... and those found cached.
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig config);

  // Queues `request`. Fails when it could never fit the KV cache.
  absl::Status Add(Request request);
  // The request ends at the next Schedule with `reason` (CANCELLED for a
  // client that went away, STOP_SEQUENCE when the front end matched one).
  void Finish(SequenceId id, FinishReason reason);

  // Plans the next step; final events of ended requests go to *events.
  StepPlan Schedule(Clock::time_point now, std::vector<SequenceEvent>* events);
  // Applies the result of the last plan: one event per sampled token.
  std::vector<SequenceEvent> Update(const StepResult& result, Clock::time_point now);
  // The last plan failed: each of its sequences ends with `status`.
  std::vector<SequenceEvent> Fail(const absl::Status& status);

  // The last plan's step took `seconds` on the engine (StepCost's input).
  void ObserveStepTime(double seconds) {
    cost_.Observe(last_decodes_, tokens_last_step_ - last_decodes_, seconds);
  }

  bool HasWork() const { return !sequences_.empty() || !to_release_.empty(); }
  SchedulerStats stats() const;
  const SchedulerConfig& config() const { return config_; }

 private:
  struct Sequence {
    Request request;
    std::vector<int32_t> generated;
    std::vector<int32_t> blocks;  // Block table.
    int64_t num_computed = 0;     // Tokens in the KV cache.
    bool known_to_workers = false;
    bool running = false;             // Holds KV blocks (in running_).
    uint64_t scheduled_in_step = 0;   // The last plan that included it.
    bool prompt_details_pending = false;
    int64_t waiting_steps = 0;
    int64_t held_steps = 0;  // Steps its first token was held back (bursts).
    FinishReason pending_finish = FinishReason::kNotFinished;
    std::vector<BlockKey> keys;          // Of full blocks, from block 0; kept when preempted.
    int64_t registered = 0;              // Leading blocks whose keys the allocator knows.
    std::vector<int32_t> cached_blocks;  // Prefix hits for the next chunk.

    int64_t total() const {
      return static_cast<int64_t>(request.prompt.size() + generated.size());
    }
    int64_t pending() const { return total() - num_computed; }  // Not in the cache.
    int32_t token(int64_t i) const {  // Of prompt + generated.
      const int64_t prompt = static_cast<int64_t>(request.prompt.size());
      return i < prompt ? request.prompt[i] : generated[i - prompt];
    }
  };
  struct InFlight {
    SequenceId id;
    int64_t num_tokens;
    bool sample;
  };

  void ApplyFinishes(Clock::time_point now, std::vector<SequenceEvent>* events);
  bool TrySchedule(Sequence& seq, int64_t max_tokens, StepPlan* plan);
  // Whether a burst may hold back `seq`'s first token: it has none yet and
  // was held fewer than max_waiting_tokens steps.
  bool Holdable(const Sequence& seq) const;
  // Whether a burst holds it back in the plan being built.
  bool Held(const Sequence& seq) const { return hold_ && Holdable(seq); }
  // Prompt tokens ready to run this step (of running sequences and of the
  // waiting ones that free slots and blocks admit), less the last token of
  // each sequence without a token yet.
  int64_t ReadyPromptWork();
  // Whether the ready prompt work is more than this step's token budget
  // less its decodes.
  bool BurstOverflows();
  bool TryAdmit(SequenceId id, StepPlan* plan);
  bool ReserveBlocks(Sequence& seq, int64_t tokens, std::vector<int32_t>* added);
  void Preempt(Sequence& seq);
  void ExtendKeys(Sequence& seq, int64_t blocks) const;
  std::vector<int32_t> MatchPrefix(Sequence& seq) const;
  void RegisterFullBlocks(Sequence& seq);
  void Release(SequenceId id);
  FinishReason StopReason(const Sequence& seq, int32_t token, Clock::time_point now) const;

  SchedulerConfig config_;
  BlockAllocator allocator_;
  std::map<SequenceId, Sequence> sequences_;
  std::deque<SequenceId> waiting_;
  std::vector<SequenceId> running_;  // Admission order.
  std::vector<InFlight> in_flight_;  // Chunks of the last plan.
  std::vector<SequenceId> to_release_;  // Ended, known to the workers.
  int64_t num_scheduled_ = 0;           // Chunks in the plan being built.
  std::vector<SequenceId> preempted_;   // In the plan being built.
  uint64_t step_ = 0;
  int64_t budget_ = 0;
  bool hold_ = false;  // A burst holds first tokens in the plan being built.
  int64_t preemptions_ = 0;
  int64_t tokens_last_step_ = 0;
  int64_t prefix_queries_ = 0;
  int64_t prefix_hits_ = 0;
  StepCost cost_;
  int64_t last_decodes_ = 0;  // Decodes in the last plan.
};

}  // namespace fms

#endif  // FMS_BATCHING_SCHEDULER_H_
