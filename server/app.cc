#include "server/app.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "batching/batcher.h"
#include "model/llama_engine.h"
#include "model/malloc_tuning.h"
#include "model/torch_threads.h"
#include "server/generation_service.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "nlohmann/json.hpp"
#include "server/request_log.h"

namespace fms {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr double kKvBudgetBytes = 4.0 * (1 << 30);  // Upper bound for the KV pool.

int Fatal(const absl::Status& status) {
  const std::string line = absl::StrCat("fms-server: ", status.message());
  std::fprintf(stderr, "%s\n", line.c_str());
  std::ofstream log("/dev/termination-log");
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

at::ScalarType Dtype(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  return at::kFloat;
}

// Blocks per sequence at max_sequence_length, times the batch size, within
// the KV budget; at least one full-length sequence.
int64_t KvBlocks(const LlamaConfig& c, at::ScalarType dtype, int64_t max_seq, int64_t batch) {
  const int64_t per_seq = (max_seq + kBlockSize - 1) / kBlockSize;
  const double block_bytes = 2.0 * c.num_layers * c.num_kv_heads * c.head_dim * kBlockSize *
                             at::elementSize(dtype);
  const auto budget = static_cast<int64_t>(kKvBudgetBytes / block_bytes);
  return std::max(per_seq, std::min(per_seq * batch, budget));
}

// Everything that exists once the model is loaded.
struct Backend {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<LlamaEngine> engine;
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<Batcher> batcher;
  GenerationServiceOptions options;
  int64_t kv_blocks = 0;
};

absl::StatusOr<std::unique_ptr<Backend>> LoadBackend(const ServerConfig& config) {
  TuneMallocForModel();
  ConfigureTorchThreads({});
  const at::ScalarType dtype = Dtype(config.dtype_str);
  auto model = LlamaModel::Load(config.model_name, {.dtype = dtype});
  if (!model.ok()) return model.status();
  const LlamaConfig c = (*model)->config();
  if (c.tokenizer_path.empty()) {
    return absl::NotFoundError(absl::StrCat(config.model_name, ": no tokenizer.model"));
  }
  auto backend = std::make_unique<Backend>();
  auto tokenizer = Tokenizer::Load(c.tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  backend->tokenizer = *std::move(tokenizer);
  const uint32_t max_seq = config.max_sequence_length.value_or(
      static_cast<uint32_t>(c.max_position_embeddings));
  const uint32_t max_new = std::min(config.max_new_tokens, max_seq - 1);
  backend->kv_blocks = KvBlocks(c, dtype, max_seq, config.max_batch_size);
  backend->engine = std::make_unique<LlamaEngine>(
      *std::move(model), KvCacheOptions{.num_blocks = backend->kv_blocks, .block_size = kBlockSize});
  backend->metrics = std::make_unique<ServerMetrics>(
      MetricsLimits{.max_sequence_length = max_seq, .max_new_tokens = max_new,
                    .kv_blocks = backend->kv_blocks});
  backend->batcher = std::make_unique<Batcher>(
      backend->engine.get(), SchedulerConfig{.max_batch_size = config.max_batch_size,
                                             .max_tokens_per_step = 512,
                                             .max_waiting_tokens = config.max_waiting_tokens,
                                             .num_blocks = backend->kv_blocks,
                                             .block_size = kBlockSize,
                                             .eos_token_ids = c.eos_token_ids},
      backend->metrics.get());
  backend->options = {
      .limits = {.max_new_tokens = max_new, .max_sequence_length = max_seq,
                 .default_include_stop_seqs = config.default_include_stop_seqs},
      .context = {.tokenizer = backend->tokenizer.get(), .max_sequence_length = max_seq,
                  .eos_token_ids = c.eos_token_ids,
                  .output_special_tokens = config.output_special_tokens,
                  .metrics = backend->metrics.get()},
      .max_concurrent_requests = config.max_concurrent_requests};
  return backend;
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
  if (config.num_shard != 1) {
    return Fatal(absl::UnimplementedError(
        "NUM_SHARD > 1 needs the worker processes, which this build does not have yet"));
  }
  auto credentials = Credentials(config);
  if (!credentials.ok()) return Fatal(credentials.status());
  // gRPC first, NOT_SERVING until the model is loaded and a step ran.
  GenerationService service;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::StrCat("0.0.0.0:", config.grpc_port), *credentials, &port);
  builder.RegisterService(&service);
  // Accept client keepalive pings every 20 s or more (clients commonly use 25 s
  // without calls in flight) instead of answering GOAWAY "too_many_pings".
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fatal(absl::UnavailableError(absl::StrCat("cannot listen on port ", config.grpc_port)));
  }
  SetServing(*server, false);
  // HTTP /health (readiness: 503 until serving) and /metrics.
  std::atomic<ServerMetrics*> metrics{nullptr};
  auto http = HttpServer::Start(static_cast<int>(config.port), [&](const std::string& path) {
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
  if (!http.ok()) {
    server->Shutdown();
    return Fatal(http.status());
  }
  auto backend = LoadBackend(config);
  absl::Status ready = backend.ok() ? WarmUp(**backend) : backend.status();
  if (!ready.ok()) {
    server->Shutdown();
    return Fatal(ready);
  }
  service.Activate((*backend)->batcher.get(), (*backend)->options);
  metrics = (*backend)->metrics.get();
  SetServing(*server, true);
  LogEvent(LogLevel::kInfo, "serving",
           nlohmann::json{{"model", config.model_name},
                          {"grpc_port", port},
                          {"http_port", (*http)->port()},
                          {"max_sequence_length", (*backend)->options.limits.max_sequence_length},
                          {"max_new_tokens", (*backend)->options.limits.max_new_tokens},
                          {"kv_blocks", (*backend)->kv_blocks}}
               .dump());
  int signal = 0;
  sigwait(&signals, &signal);
  LogEvent(LogLevel::kInfo, "draining",
           nlohmann::json{{"signal", signal}, {"grace_s", config.drain_grace_seconds}}.dump());
  Drain(config, *server, service);
  (*backend)->batcher->Shutdown();
  return 0;
}

}  // namespace fms
