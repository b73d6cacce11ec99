#include "server/app.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "batching/batcher.h"
#include "model/llama_engine.h"
#include "model/malloc_tuning.h"
#include "model/torch_threads.h"
#include "server/generation_service.h"
#include "spdlog/spdlog.h"

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

}  // namespace

int RunServer(const ServerConfig& config) {
  // SIGTERM/SIGINT go to sigwait below: block them before any thread exists.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  if (config.model_name.empty()) {
    return Fatal(absl::InvalidArgumentError("MODEL_NAME (--model-name) is required"));
  }
  TuneMallocForModel();
  ConfigureTorchThreads({});
  const at::ScalarType dtype = Dtype(config.dtype_str);
  auto model = LlamaModel::Load(config.model_name, {.dtype = dtype});
  if (!model.ok()) return Fatal(model.status());
  const LlamaConfig model_config = (*model)->config();
  if (model_config.tokenizer_path.empty()) {
    return Fatal(absl::NotFoundError(absl::StrCat(config.model_name, ": no tokenizer.model")));
  }
  auto tokenizer = Tokenizer::Load(model_config.tokenizer_path);
  if (!tokenizer.ok()) return Fatal(tokenizer.status());
  const uint32_t max_seq = config.max_sequence_length.value_or(
      static_cast<uint32_t>(model_config.max_position_embeddings));
  const uint32_t max_new = std::min(config.max_new_tokens, max_seq - 1);
  const int64_t blocks = KvBlocks(model_config, dtype, max_seq, config.max_batch_size);
  LlamaEngine engine(*std::move(model), {.num_blocks = blocks, .block_size = kBlockSize});
  Batcher batcher(&engine, {.max_batch_size = config.max_batch_size,
                            .max_tokens_per_step = 512,
                            .max_waiting_tokens = config.max_waiting_tokens,
                            .num_blocks = blocks,
                            .block_size = kBlockSize,
                            .eos_token_ids = model_config.eos_token_ids});
  GenerationService service(
      &batcher, {.limits = {.max_new_tokens = max_new, .max_sequence_length = max_seq,
                            .default_include_stop_seqs = config.default_include_stop_seqs},
                 .context = {.tokenizer = tokenizer->get(), .max_sequence_length = max_seq,
                             .eos_token_ids = model_config.eos_token_ids,
                             .output_special_tokens = config.output_special_tokens},
                 .max_concurrent_requests = config.max_concurrent_requests});
  auto credentials = Credentials(config);
  if (!credentials.ok()) return Fatal(credentials.status());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::StrCat("0.0.0.0:", config.grpc_port),
                           *credentials, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fatal(absl::UnavailableError(absl::StrCat("cannot listen on port ", config.grpc_port)));
  }
  spdlog::info("serving {} on port {} (max_sequence_length {}, max_new_tokens {}, {} KV blocks)",
               config.model_name, port, max_seq, max_new, blocks);
  int signal = 0;
  sigwait(&signals, &signal);
  spdlog::info("signal {}: draining for up to {} s", signal, config.drain_grace_seconds);
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(config.drain_grace_seconds));
  batcher.Shutdown();
  return 0;
}

}  // namespace fms
