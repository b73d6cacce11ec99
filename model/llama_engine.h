// LlamaEngine: the Engine seam implemented by a LlamaModel: in-process for
// tests and benchmarks, and behind every fms-worker rank. It
// keeps each sequence's prompt, generated tokens, sampling parameters and
// block table, runs one ragged forward per plan, samples every sampled chunk
// in one batched call, and reports prompt-token details from the raw logits.
// In a tensor-parallel group every rank runs every plan; only rank 0 gets the
// logits, samples and reports outputs (the other ranks' results are empty).

#ifndef FMS_MODEL_LLAMA_ENGINE_H_
#define FMS_MODEL_LLAMA_ENGINE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "batching/engine.h"
#include "batching/plan_checker.h"
#include "model/adapter.h"
#include "model/kv_cache.h"
#include "model/llama_model.h"

namespace fms {

class LlamaEngine : public Engine {
 public:
  LlamaEngine(std::unique_ptr<LlamaModel> model, const KvCacheOptions& cache);

  EngineInfo Info() const override;
  absl::StatusOr<StepResult> Step(const StepPlan& plan) override;
  absl::StatusOr<AdapterInfo> LoadAdapter(const std::string& id,
                                          const std::string& dir) override;
  void UnloadAdapter(const std::string& id) override;

 private:
  struct Sequence {
    NewSequence spec;
    std::shared_ptr<const Adapter> adapter;  // Held until the sequence ends.
    std::vector<int32_t> generated;
    std::vector<int32_t> blocks;
    std::vector<TokenDetails> prompt_details;  // Collected until reported.
  };

  absl::StatusOr<StepResult> Run(const StepPlan& plan);
  // Forgets, checks and records the plan; the batch to run.
  absl::StatusOr<ForwardBatch> Apply(const StepPlan& plan);
  // Samples rank 0's `logits` [rows, vocab] into result.outputs.
  void Sample(const StepPlan& plan, const ForwardBatch& batch, const at::Tensor& logits,
              StepResult& result);
  // The adapters of `plan`'s new sequences, by id; fails naming one this
  // worker has not loaded (nothing of the plan applied yet).
  absl::StatusOr<std::map<std::string, std::shared_ptr<const Adapter>>> PlanAdapters(
      const StepPlan& plan);
  // Details of prompt positions [first, first + n) from `rows` [n, vocab],
  // where row i holds the logits after position first + i.
  void AddPromptDetails(Sequence& seq, int64_t first, const at::Tensor& rows);
  // Placeholders at the start of the sequence's prompt (prompt tuning).
  static int64_t VirtualTokens(const Sequence& seq);
  // The sequence `id`; crashes when the worker does not hold it.
  Sequence& Known(SequenceId id);

  std::unique_ptr<LlamaModel> model_;
  KvCache cache_;
  PlanChecker checker_;  // Refuses a plan this worker cannot run.
  std::map<SequenceId, Sequence> sequences_;
  absl::Mutex adapters_mu_;  // LoadAdapter runs on RPC threads, Step on compute.
  std::map<std::string, std::shared_ptr<const Adapter>> adapters_
      ABSL_GUARDED_BY(adapters_mu_);
};

}  // namespace fms

#endif  // FMS_MODEL_LLAMA_ENGINE_H_
