#include "server/backend.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/request_log.h"

namespace fms {
namespace {

constexpr int64_t kBlockSize = 16;  // KV positions per block.

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> StartWorkers(const ServerConfig& config) {
  auto backend = std::make_unique<Backend>();
  auto model = LoadLlamaConfig(config.model_name);
  if (!model.ok()) return model.status();
  backend->model = *std::move(model);
  auto tokenizer = LoadTokenizer(config.model_name);
  if (!tokenizer.ok()) return tokenizer.status();
  backend->tokenizer = *std::move(tokenizer);
  if (backend->tokenizer->vocab_size() > backend->model.vocab_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        config.model_name, ": the tokenizer has ", backend->tokenizer->vocab_size(),
        " token ids but the model's vocabulary (config.json vocab_size) is ",
        backend->model.vocab_size));
  }
  const uint32_t max_seq = config.max_sequence_length.value_or(
      static_cast<uint32_t>(backend->model.max_position_embeddings));
  backend->options.limits = {.max_new_tokens = std::min(config.max_new_tokens, max_seq - 1),
                             .max_sequence_length = max_seq,
                             .default_include_stop_seqs = config.default_include_stop_seqs};
  char dir[] = "/tmp/fms-serve-XXXXXX";  // Short: socket paths are limited to 107 bytes.
  if (mkdtemp(dir) == nullptr) return absl::InternalError("cannot create the socket folder");
  backend->socket_dir = dir;
  auto binary = FindWorkerBinary();
  if (!binary.ok()) return binary.status();
  auto workers = WorkerGroup::Start(
      {.worker_binary = *binary, .model = config.model_name,
       .num_shard = static_cast<int>(config.num_shard), .socket_dir = backend->socket_dir,
       .socket_prefix = config.shard_uds_path,
       .dtype = config.dtype_str.empty() ? "float32" : config.dtype_str,
       .max_sequence_length = max_seq,
       .kv_budget_bytes = static_cast<int64_t>(config.kv_cache_memory),
       .block_size = kBlockSize,
       .master_addr = config.master_addr, .master_port = static_cast<int>(config.master_port)});
  if (!workers.ok()) return workers.status();
  backend->workers = *std::move(workers);
  return backend;
}

absl::Status ConnectBackend(const ServerConfig& config, Backend& b) {
  if (absl::Status s = b.workers->WaitReady(absl::Minutes(30)); !s.ok()) return s;
  auto engine = RemoteEngine::Connect(b.workers->sockets());
  if (!engine.ok()) return engine.status();
  b.engine = *std::move(engine);
  const EngineInfo info = b.engine->Info();
  b.kv_blocks = info.num_blocks;  // The workers size their own pools.
  const uint32_t max_seq = b.options.limits.max_sequence_length;
  b.max_batch_size = config.max_batch_size > 0
                         ? config.max_batch_size
                         : DeriveMaxBatchSize(info.num_blocks * info.block_size, max_seq);
  if (!info.non_finite_weights.empty()) {
    LogEvent(LogLevel::kWarn, "model weights hold NaN or infinite values",
             nlohmann::json{{"model", config.model_name},
                            {"tensors", info.non_finite_weights}}.dump());
  }
  b.metrics = std::make_unique<ServerMetrics>(
      MetricsLimits{.max_sequence_length = max_seq,
                    .max_new_tokens = b.options.limits.max_new_tokens,
                    .kv_blocks = b.kv_blocks});
  // config.json's and generation_config.json's EOS ids, and the tokenizer's.
  std::vector<int32_t> eos = info.eos_token_ids;
  const int32_t tokenizer_eos = b.tokenizer->eos_id();
  if (tokenizer_eos >= 0 && std::find(eos.begin(), eos.end(), tokenizer_eos) == eos.end()) {
    eos.push_back(tokenizer_eos);
  }
  b.batcher = std::make_unique<Batcher>(
      b.engine.get(), SchedulerConfig{.max_batch_size = b.max_batch_size,
                                      .max_tokens_per_step = config.max_num_batched_tokens,
                                      .mixed_step_ratio = config.mixed_step_ratio,
                                      .max_waiting_tokens = config.max_waiting_tokens,
                                      .num_blocks = info.num_blocks,
                                      .block_size = info.block_size,
                                      .enable_prefix_caching = config.enable_prefix_caching,
                                      .hold_burst_first_tokens = config.hold_burst_first_tokens,
                                      .eos_token_ids = eos},
      b.metrics.get());
  b.options.context = {.tokenizer = b.tokenizer.get(), .max_sequence_length = max_seq,
                       .eos_token_ids = eos,
                       .output_special_tokens = config.output_special_tokens,
                       .add_special_tokens = config.add_special_tokens,
                       .metrics = b.metrics.get()};
  b.options.max_concurrent_requests = config.max_concurrent_requests;
  b.options.max_batch_size = b.max_batch_size;
  if (!config.adapter_cache.empty()) {
    b.adapters = std::make_unique<AdapterStore>(
        AdapterStoreOptions{
            .root = config.adapter_cache,
            .max_loaded = config.max_loras,
            .max_bytes = int64_t{config.prompt_cache_size_mb} << 20,
            .max_lora_rank = config.max_lora_rank,
            .max_prompt_prefix_length = config.max_prompt_prefix_length > 0
                                            ? config.max_prompt_prefix_length
                                            : max_seq / 2},
        b.engine.get());
    b.options.adapters = b.adapters.get();
  }
  return absl::OkStatus();
}

absl::Status WarmUp(Backend& backend) {
  Request request{.prompt = {std::max(backend.tokenizer->bos_id(), 0)},
                  .arrival = Clock::now(),
                  .internal = true};
  request.stopping.max_new_tokens = 1;
  absl::Notification done;
  absl::Status status;
  auto id = backend.batcher->Submit(request, [&](const SequenceEvent& event) {
    if (event.finish == FinishReason::kNotFinished) return;
    status = event.error;
    done.Notify();
  });
  if (!id.ok()) return id.status();
  done.WaitForNotification();
  return status;
}

WorkerSupervisor::~WorkerSupervisor() {
  stop_.Notify();
  thread_.join();
}

void WorkerSupervisor::Loop() {
  while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
    if (auto exited = backend_->workers->Exited(); exited && !Recover(*exited)) return;
  }
}

// The restart spawns with threads running; posix_spawn is safe there.
bool WorkerSupervisor::Recover(const std::string& detail) {
  LogEvent(LogLevel::kError, "worker exited", nlohmann::json{{"detail", detail}}.dump());
  set_serving_(false);
  service_->SetHealthy(false);
  backend_->batcher->Reset(absl::UnavailableError(detail));
  const WorkerGroupOptions options = backend_->workers->options();
  backend_->workers.reset();  // Stops and reaps the other ranks.
  auto workers = WorkerGroup::Start(options);
  absl::Status status = workers.ok() ? (*workers)->WaitReady(absl::Minutes(30))
                                     : workers.status();
  if (status.ok()) status = backend_->engine->Reconnect((*workers)->sockets());
  if (backend_->adapters != nullptr) backend_->adapters->Forget();  // The new ranks hold none.
  if (workers.ok()) backend_->workers = *std::move(workers);
  if (status.ok()) status = WarmUp(*backend_);
  if (!status.ok()) {  // Stay NOT_SERVING: Kubernetes restarts the pod.
    LogEvent(LogLevel::kError, "worker restart failed",
             nlohmann::json{{"detail", std::string(status.message())}}.dump());
    return false;
  }
  service_->SetHealthy(true);
  set_serving_(true);
  LogEvent(LogLevel::kInfo, "workers restarted");
  return true;
}

}  // namespace fms
