// Backend: everything behind the gRPC service, and its life cycle: the
// model's facts, the tokenizer, the fms-worker processes, the engine over
// them, the metrics and the batcher that drives them.
//
//   StartWorkers    before any thread exists: config, tokenizer, spawn workers
//   ConnectBackend  once they answer: engine, metrics, batcher, service options
//   WarmUp          one real step before SERVING (and after each restart)
//   WorkerSupervisor  restarts the whole group when a worker exits

#ifndef FMS_SERVER_BACKEND_H_
#define FMS_SERVER_BACKEND_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "batching/batcher.h"
#include "model/llama_config.h"
#include "server/adapter_store.h"
#include "server/config.h"
#include "server/generation_service.h"
#include "server/metrics.h"
#include "server/tokenizer.h"
#include "sharding/remote_engine.h"
#include "sharding/worker_group.h"

namespace fms {

// Everything behind the gRPC service: the model's facts, the tokenizer, the
// worker processes and the batcher that drives them.
struct Backend {
  LlamaConfig model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string socket_dir;
  std::unique_ptr<WorkerGroup> workers;
  std::unique_ptr<RemoteEngine> engine;
  std::unique_ptr<AdapterStore> adapters;  // Over `engine`.
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<Batcher> batcher;
  GenerationServiceOptions options;
  int64_t kv_blocks = 0;  // As the workers sized their pools (EngineInfo).
  uint32_t max_batch_size = 0;  // MAX_BATCH_SIZE, or derived from kv_blocks.

  ~Backend() {
    batcher.reset();  // Stops stepping before the workers go.
    workers.reset();
    if (!socket_dir.empty()) std::filesystem::remove_all(socket_dir);
  }
};

// Reads the model's config and tokenizer in this process (no LibTorch here)
// and spawns the workers, which load the weights. Call before any thread
// exists (the front end's first spawn).
absl::StatusOr<std::unique_ptr<Backend>> StartWorkers(const ServerConfig& config);

// Once the workers answer: the engine over them, metrics and the batcher.
absl::Status ConnectBackend(const ServerConfig& config, Backend& backend);

// One real generation step through the batcher.
absl::Status WarmUp(Backend& backend);

// Watches the workers. When one exits: NOT_SERVING, the open requests fail
// (TGIS's "Request failed during generation: ..." naming the rank), the whole
// group is restarted and warmed up, and the server is SERVING again, without
// restarting the front end.
class WorkerSupervisor {
 public:
  // `set_serving` sets the gRPC health status; `backend` and `service` must
  // outlive the supervisor.
  WorkerSupervisor(Backend* backend, std::function<void(bool)> set_serving,
                   GenerationService* service)
      : backend_(backend),
        set_serving_(std::move(set_serving)),
        service_(service),
        thread_([this] { Loop(); }) {}
  ~WorkerSupervisor();

 private:
  void Loop();
  // False when the group could not be restarted.
  bool Recover(const std::string& detail);

  Backend* const backend_;
  const std::function<void(bool)> set_serving_;
  GenerationService* const service_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace fms

#endif  // FMS_SERVER_BACKEND_H_
