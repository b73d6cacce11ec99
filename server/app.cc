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
#include "server/backend.h"
#include "server/generation_service.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "nlohmann/json.hpp"
#include "server/request_log.h"

namespace fms {
namespace {

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
  auto backend = StartWorkers(config);  // posix_spawn before any thread starts.
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
                          {"kv_blocks", (*backend)->kv_blocks},
                          {"max_batch_size", (*backend)->max_batch_size}}
               .dump());
  int signal = 0;
  std::atomic<bool> draining{false};
  {
    // The supervisor lives through the drain: workers it restarted die with
    // its thread (PR_SET_PDEATHSIG is per thread), and their streams must
    // finish first. A restart during the drain does not report SERVING.
    WorkerSupervisor supervisor(
        backend->get(),
        [&server, &draining](bool serving) { SetServing(*server, serving && !draining); },
        &service);
    sigwait(&signals, &signal);
    draining = true;
    LogEvent(LogLevel::kInfo, "draining",
             nlohmann::json{{"signal", signal}, {"grace_s", config.drain_grace_seconds}}.dump());
    Drain(config, *server, service);
  }
  return 0;  // ~Backend stops the batcher, then the workers.
}

}  // namespace fms
