// The fmaas.GenerationService gRPC service: Generate, GenerateStream,
// Tokenize and ModelInfo with TGIS semantics, over a Batcher. The front end's
// only place where absl::Status becomes grpc::Status. Each RPC's text work
// (detokenization, stop sequences) runs on the RPC's own thread: the batcher
// thread only queues events (EventQueue).

#ifndef FMS_SERVER_GENERATION_SERVICE_H_
#define FMS_SERVER_GENERATION_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/random/random.h"
#include "absl/synchronization/mutex.h"
#include "batching/batcher.h"
#include "proto/generation.grpc.pb.h"
#include "server/admission.h"
#include "server/event_queue.h"
#include "server/generation_run.h"
#include "server/validation.h"

namespace fms {

struct GenerationServiceOptions {
  ValidationLimits limits;         // max_new_tokens already clamped.
  RunContext context;
  uint32_t max_concurrent_requests = 512;  // Inputs in flight; beyond: overloaded.
  uint32_t max_batch_size = 12;  // For the deadline estimate (admission.h).
  AdapterStore* adapters = nullptr;  // adapter_id / prefix_id; null: refused.
};

// Registered before the model loads (so that health checks answer while it
// loads); RPCs answer UNAVAILABLE until Activate and after StopAccepting.
class GenerationService final : public fmaas::GenerationService::Service {
 public:
  GenerationService() = default;

  // The model is loaded and warmed up: start serving. Call once.
  void Activate(Batcher* batcher, GenerationServiceOptions options);
  // Draining: new generation RPCs are refused, running ones go on.
  void StopAccepting() { accepting_ = false; }
  // Generation inputs in flight.
  int64_t in_flight() const { return in_flight_.load(); }
  // Active, accepting work and healthy (HTTP /health).
  bool serving() const { return active_.load() != nullptr && accepting_ && healthy_; }
  // While false (the workers are being restarted, or could not be), RPCs
  // answer UNAVAILABLE and /health 503.
  void SetHealthy(bool healthy) { healthy_ = healthy; }

  grpc::Status Generate(grpc::ServerContext* context,
                        const fmaas::BatchedGenerationRequest* request,
                        fmaas::BatchedGenerationResponse* response) override;
  grpc::Status GenerateStream(grpc::ServerContext* context,
                              const fmaas::SingleGenerationRequest* request,
                              grpc::ServerWriter<fmaas::GenerationResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context,
                        const fmaas::BatchedTokenizeRequest* request,
                        fmaas::BatchedTokenizeResponse* response) override;
  grpc::Status ModelInfo(grpc::ServerContext* context, const fmaas::ModelInfoRequest* request,
                         fmaas::ModelInfoResponse* response) override;

 private:
  using Runs = std::vector<std::shared_ptr<GenerationRun>>;

  // Validates and tokenizes every input and loads the adapter (`adapter_id`,
  // empty for none); fails as a whole.
  absl::StatusOr<Runs> Prepare(const fmaas::Parameters* params,
                               const std::vector<const std::string*>& texts,
                               const std::string& adapter_id);
  // The adapter `adapter_id` names, held (null for none).
  absl::StatusOr<std::shared_ptr<const AdapterLease>> LeaseAdapter(
      const std::string& adapter_id);
  // Submits `runs` and returns their ids; their events go to `queue`.
  absl::StatusOr<std::vector<SequenceId>> Submit(const Runs& runs,
                                                 const std::shared_ptr<EventQueue>& queue);
  // Feeds the events queued so far (waiting briefly for one) to their runs,
  // on this, the RPC's, thread; a stop sequence ends its sequence at the
  // batcher's next step. False once the client has cancelled.
  bool Deliver(EventQueue& queue, const Runs& runs, const std::vector<SequenceId>& ids,
               grpc::ServerContext& context);
  // Takes `n` concurrency permits, all or none; false when the limit is
  // reached or the call's deadline would pass in the queue (admission.h).
  bool Acquire(const grpc::ServerContext& context, uint32_t n);
  // Feeds the inference times of a call's finished runs to the estimate.
  void RecordFinished(const Runs& runs);

  // UNAVAILABLE unless active and accepting.
  grpc::Status CheckAvailable() const;
  // RESOURCE_EXHAUSTED "Model is overloaded", counted.
  grpc::Status Overloaded() const;

  std::atomic<Batcher*> active_{nullptr};  // Set once, after options_.
  Batcher* batcher_ = nullptr;
  GenerationServiceOptions options_;
  std::atomic<bool> accepting_{true};
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> in_flight_{0};
  std::unique_ptr<DeadlineAdmission> admission_;  // Made by Activate.
  absl::Mutex rng_mu_;
  absl::BitGen rng_ ABSL_GUARDED_BY(rng_mu_);
};

}  // namespace fms

#endif  // FMS_SERVER_GENERATION_SERVICE_H_
