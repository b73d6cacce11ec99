// The gRPC side of an fms-worker: Info, Steps, adapters and Health over the
// Engine that owns this rank's model. Steps run one at a time on the worker's
// compute thread, whichever gRPC thread received them; adapters load on the
// receiving thread, beside the steps (they need no collective).

#ifndef FMS_SHARDING_WORKER_SERVICE_H_
#define FMS_SHARDING_WORKER_SERVICE_H_

#include "absl/synchronization/mutex.h"
#include "batching/engine.h"
#include "proto/worker.grpc.pb.h"
#include "sharding/compute_thread.h"

namespace fms {

class WorkerService final : public worker::WorkerService::Service {
 public:
  // Steps run on `compute`, the thread that built the engine (worker_app.cc).
  WorkerService(Engine* engine, ComputeThread* compute, int rank, int world_size)
      : engine_(engine), compute_(compute), rank_(rank), world_size_(world_size) {}

  grpc::Status Info(grpc::ServerContext* context, const worker::InfoRequest* request,
                    worker::InfoResponse* response) override;
  // One StepResult per StepPlan until the front end closes the stream; a
  // refused step ends it with the refusal.
  grpc::Status Steps(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<worker::StepResult, worker::StepPlan>* stream) override;
  grpc::Status LoadAdapter(grpc::ServerContext* context,
                           const worker::LoadAdapterRequest* request,
                           worker::LoadAdapterResponse* response) override;
  grpc::Status UnloadAdapter(grpc::ServerContext* context,
                             const worker::UnloadAdapterRequest* request,
                             worker::UnloadAdapterResponse* response) override;
  grpc::Status Health(grpc::ServerContext* context, const worker::HealthRequest* request,
                      worker::HealthResponse* response) override;

 private:
  // One step: decode, run on the compute thread, encode, with its timings.
  grpc::Status RunStep(const worker::StepPlan& request, worker::StepResult* response);

  Engine* const engine_;
  ComputeThread* const compute_;
  const int rank_;
  const int world_size_;
};

}  // namespace fms

#endif  // FMS_SHARDING_WORKER_SERVICE_H_
