#include "server/app.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "batching/batcher.h"
#include "model/llama_config.h"
#include "server/generation_service.h"
#include "server/http_server.h"
#include "server/tokenizer.h"
#include "server/metrics.h"
#include "nlohmann/json.hpp"
#include "server/request_log.h"
#include "sharding/remote_engine.h"
#include "sharding/worker_group.h"

namespace fms {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr double kKvBudgetBytes = 4.0 * (1 << 30);  // Upper bound for the KV pool.

// Kubernetes' terminationMessagePath; it exists in a pod, and is never created.
const char* TerminationLogPath() {
  const char* path = std::getenv("FMS_TERMINATION_LOG");
  return path != nullptr ? path : "/dev/termination-log";
}

int Fatal(const absl::Status& status) {
  const std::string line = absl::StrCat("fms-server: ", status.message());
  std::fprintf(stderr, "%s\n", line.c_str());
  std::ofstream log(TerminationLogPath(), std::ios::in | std::ios::out | std::ios::trunc);
  if (log) log << line << "\n";
  return 1;
}

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Plaintext, TLS (TLS_CERT_PATH + TLS_KEY_PATH) or mTLS (+ TLS_CLIENT_CA_CERT_PATH:
// clients must present a certificate signed by that CA).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerConfig& c) {
  if (c.tls_cert_path.empty()) return grpc::InsecureServerCredentials();
  auto cert = ReadPem(c.tls_cert_path, "TLS_CERT_PATH");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(c.tls_key_path, "TLS_KEY_PATH");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!c.tls_client_ca_cert_path.empty()) {
    auto ca = ReadPem(c.tls_client_ca_cert_path, "TLS_CLIENT_CA_CERT_PATH");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

int64_t DtypeBytes(const std::string& name) {
  return name == "bfloat16" || name == "float16" ? 2 : 4;
}

// Blocks per sequence at max_sequence_length, times the batch size, within
// the KV budget; at least one full-length sequence.
int64_t KvBlocks(const LlamaConfig& c, int64_t dtype_bytes, int64_t max_seq, int64_t batch,
                 int64_t shards) {
  const int64_t per_seq = (max_seq + kBlockSize - 1) / kBlockSize;
  // Each rank holds its kv heads (tensor_parallel.h): split, or one replicated.
  const int64_t kv_heads = std::max<int64_t>(1, c.num_kv_heads / shards);
  const double block_bytes =
      2.0 * c.num_layers * kv_heads * c.head_dim * kBlockSize * dtype_bytes;
  const auto budget = static_cast<int64_t>(kKvBudgetBytes / block_bytes);
  return std::max(per_seq, std::min(per_seq * batch, budget));
}

// Everything behind the gRPC service: the model's facts, the tokenizer, the
// worker processes and the batcher that drives them.
struct Backend {
  LlamaConfig model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string socket_dir;
  std::unique_ptr<WorkerGroup> workers;
  std::unique_ptr<RemoteEngine> engine;
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<Batcher> batcher;
  GenerationServiceOptions options;
  int64_t kv_blocks = 0;

  ~Backend() {
    batcher.reset();  // Stops stepping before the workers go.
    workers.reset();
    if (!socket_dir.empty()) std::filesystem::remove_all(socket_dir);
  }
};

// Before any thread exists: read the model's config and tokenizer in this
// process (no LibTorch here) and spawn the workers, which load the weights.
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
  backend->kv_blocks = KvBlocks(backend->model, DtypeBytes(config.dtype_str), max_seq,
                                config.max_batch_size, config.num_shard);
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
       .kv_blocks = backend->kv_blocks, .block_size = kBlockSize,
       .master_addr = config.master_addr, .master_port = static_cast<int>(config.master_port)});
  if (!workers.ok()) return workers.status();
  backend->workers = *std::move(workers);
  return backend;
}

// Once the workers answer: the engine over them, metrics and the batcher.
absl::Status ConnectBackend(const ServerConfig& config, Backend& b) {
  if (absl::Status s = b.workers->WaitReady(absl::Minutes(30)); !s.ok()) return s;
  auto engine = RemoteEngine::Connect(b.workers->sockets());
  if (!engine.ok()) return engine.status();
  b.engine = *std::move(engine);
  const uint32_t max_seq = b.options.limits.max_sequence_length;
  b.metrics = std::make_unique<ServerMetrics>(
      MetricsLimits{.max_sequence_length = max_seq,
                    .max_new_tokens = b.options.limits.max_new_tokens,
                    .kv_blocks = b.kv_blocks});
  // config.json's and generation_config.json's EOS ids, and the tokenizer's.
  std::vector<int32_t> eos = b.engine->Info().eos_token_ids;
  const int32_t tokenizer_eos = b.tokenizer->eos_id();
  if (tokenizer_eos >= 0 && std::find(eos.begin(), eos.end(), tokenizer_eos) == eos.end()) {
    eos.push_back(tokenizer_eos);
  }
  b.batcher = std::make_unique<Batcher>(
      b.engine.get(), SchedulerConfig{.max_batch_size = config.max_batch_size,
                                      .max_tokens_per_step = 512,
                                      .max_waiting_tokens = config.max_waiting_tokens,
                                      .num_blocks = b.kv_blocks,
                                      .block_size = kBlockSize,
                                      .eos_token_ids = eos},
      b.metrics.get());
  b.options.context = {.tokenizer = b.tokenizer.get(), .max_sequence_length = max_seq,
                       .eos_token_ids = eos,
                       .output_special_tokens = config.output_special_tokens,
                       .metrics = b.metrics.get()};
  b.options.max_concurrent_requests = config.max_concurrent_requests;
  return absl::OkStatus();
}

// One real generation step through the batcher before reporting SERVING.
absl::Status WarmUp(Backend& backend) {
  Request request{.prompt = {std::max(backend.tokenizer->bos_id(), 0)},
                  .arrival = Clock::now()};
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

void SetServing(grpc::Server& server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  health->SetServingStatus(serving);  // Every service, "" included.
  health->SetServingStatus("fmaas.GenerationService", serving);
}

// SIGTERM: NOT_SERVING, refuse new work, let in-flight inputs finish within
// the grace period, then stop.
void Drain(const ServerConfig& config, grpc::Server& server, GenerationService& service) {
  SetServing(server, false);
  service.StopAccepting();
  const auto deadline = Clock::now() + std::chrono::seconds(config.drain_grace_seconds);
  while (service.in_flight() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

std::unique_ptr<grpc::Server> StartGrpc(const ServerConfig& config, GenerationService& service,
                                        std::shared_ptr<grpc::ServerCredentials> credentials,
                                        int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("0.0.0.0:", config.grpc_port), credentials, port);
  builder.RegisterService(&service);
  // Accept client keepalive pings every 20 s or more (clients commonly use 25 s
  // without calls in flight) instead of answering GOAWAY "too_many_pings".
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server != nullptr) SetServing(*server, false);  // Until the model is ready.
  return server;
}

// HTTP /health (readiness: 503 until serving) and /metrics.
absl::StatusOr<std::unique_ptr<HttpServer>> StartHttp(const ServerConfig& config,
                                                      const GenerationService& service,
                                                      const std::atomic<ServerMetrics*>& metrics) {
  return HttpServer::Start(static_cast<int>(config.port), [&](const std::string& path) {
    if (path == "/health") {
      return service.serving() ? HttpResponse{}
                               : HttpResponse{.status = 503,
                                              .content_type = "application/json",
                                              .body = R"({"error":"unhealthy"})"};
    }
    if (path == "/metrics") {
      ServerMetrics* m = metrics.load();
      return HttpResponse{.content_type = "text/plain; version=0.0.4",
                          .body = m != nullptr ? m->Serialize() : ""};
    }
    return HttpResponse{.status = 404, .body = "not found\n"};
  });
}

// Watches the workers. When one exits: NOT_SERVING, the open requests fail
// (TGIS's "Request failed during generation: ..." naming the rank), the whole
// group is restarted and warmed up, and the server is SERVING again, without
// restarting the front end.
class WorkerSupervisor {
 public:
  WorkerSupervisor(Backend* backend, grpc::Server* server, GenerationService* service)
      : backend_(backend), server_(server), service_(service), thread_([this] { Loop(); }) {}
  ~WorkerSupervisor() {
    stop_.Notify();
    thread_.join();
  }

 private:
  void Loop() {
    while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      if (auto exited = backend_->workers->Exited(); exited && !Recover(*exited)) return;
    }
  }

  // False when the group could not be restarted.
  bool Recover(const std::string& detail) {
    LogEvent(LogLevel::kError, "worker exited", nlohmann::json{{"detail", detail}}.dump());
    SetServing(*server_, false);
    service_->SetHealthy(false);
    backend_->batcher->Reset(absl::UnavailableError(detail));
    const WorkerGroupOptions options = backend_->workers->options();
    backend_->workers.reset();  // Stops and reaps the other ranks.
    auto workers = WorkerGroup::Start(options);
    absl::Status status = workers.ok() ? (*workers)->WaitReady(absl::Minutes(30))
                                       : workers.status();
    if (status.ok()) status = backend_->engine->Reconnect((*workers)->sockets());
    if (workers.ok()) backend_->workers = *std::move(workers);
    if (status.ok()) status = WarmUp(*backend_);
    if (!status.ok()) {  // Stay NOT_SERVING: Kubernetes restarts the pod.
      LogEvent(LogLevel::kError, "worker restart failed",
               nlohmann::json{{"detail", std::string(status.message())}}.dump());
      return false;
    }
    service_->SetHealthy(true);
    SetServing(*server_, true);
    LogEvent(LogLevel::kInfo, "workers restarted");
    return true;
  }

  Backend* const backend_;
  grpc::Server* const server_;
  GenerationService* const service_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace

int RunServer(const ServerConfig& config) {
  // SIGTERM/SIGINT go to sigwait below: block them before any thread exists.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ConfigureLogging(config.json_output, config.log_level);
  if (config.model_name.empty()) {
    return Fatal(absl::InvalidArgumentError("MODEL_NAME (--model-name) is required"));
  }
  auto credentials = Credentials(config);
  if (!credentials.ok()) return Fatal(credentials.status());
  auto backend = StartWorkers(config);  // fork+exec before any thread starts.
  if (!backend.ok()) return Fatal(backend.status());
  GenerationService service;
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartGrpc(config, service, *credentials, &port);
  if (server == nullptr || port == 0) {
    return Fatal(absl::UnavailableError(absl::StrCat("cannot listen on port ", config.grpc_port)));
  }
  std::atomic<ServerMetrics*> metrics{nullptr};
  auto http = StartHttp(config, service, metrics);
  absl::Status ready = http.ok() ? ConnectBackend(config, **backend) : http.status();
  if (ready.ok()) ready = WarmUp(**backend);
  if (!ready.ok()) {
    server->Shutdown();
    return Fatal(ready);
  }
  service.Activate((*backend)->batcher.get(), (*backend)->options);
  metrics = (*backend)->metrics.get();
  SetServing(*server, true);
  LogEvent(LogLevel::kInfo, "serving",
           nlohmann::json{{"model", config.model_name}, {"grpc_port", port},
                          {"http_port", (*http)->port()},
                          {"max_sequence_length", (*backend)->options.limits.max_sequence_length},
                          {"max_new_tokens", (*backend)->options.limits.max_new_tokens},
                          {"kv_blocks", (*backend)->kv_blocks}}
               .dump());
  int signal = 0;
  {
    WorkerSupervisor supervisor(backend->get(), server.get(), &service);
    sigwait(&signals, &signal);
  }
  LogEvent(LogLevel::kInfo, "draining",
           nlohmann::json{{"signal", signal}, {"grace_s", config.drain_grace_seconds}}.dump());
  Drain(config, *server, service);
  return 0;  // ~Backend stops the batcher, then the workers.
}

}  // namespace fms
