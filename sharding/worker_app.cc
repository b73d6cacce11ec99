#include "sharding/worker_app.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "model/llama_engine.h"
#include "model/malloc_tuning.h"
#include "model/torch_threads.h"
#include "sharding/worker_service.h"

namespace fms {

absl::StatusOr<WorkerOptions> ParseWorkerArgs(int argc, char** argv) {
  WorkerOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
    const std::string value = argv[++i];
    bool ok = true;
    if (flag == "--model") o.model = value;
    else if (flag == "--socket") o.socket = value;
    else if (flag == "--dtype") o.dtype = value;
    else if (flag == "--rank") ok = absl::SimpleAtoi(value, &o.rank);
    else if (flag == "--world-size") ok = absl::SimpleAtoi(value, &o.world_size);
    else if (flag == "--threads") ok = absl::SimpleAtoi(value, &o.threads);
    else if (flag == "--kv-blocks") ok = absl::SimpleAtoi(value, &o.kv_blocks);
    else if (flag == "--block-size") ok = absl::SimpleAtoi(value, &o.block_size);
    else return absl::InvalidArgumentError(absl::StrCat("unknown flag ", flag));
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("bad value for ", flag, ": ", value));
  }
  if (o.model.empty() || o.socket.empty()) {
    return absl::InvalidArgumentError("--model and --socket are required");
  }
  return o;
}

int RunWorker(const WorkerOptions& options) {
  sigset_t signals;  // SIGTERM is taken by sigwait below, on this thread.
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  TuneMallocForModel();
  ConfigureTorchThreads({.intra_op_threads = options.threads});
  const at::ScalarType dtype = options.dtype == "bfloat16" ? at::kBFloat16
                               : options.dtype == "float16" ? at::kHalf
                                                            : at::kFloat;
  auto model = LlamaModel::Load(options.model, {.dtype = dtype});
  if (!model.ok()) {
    std::fprintf(stderr, "fms-worker rank %d: %s\n", options.rank,
                 std::string(model.status().message()).c_str());
    return 1;
  }
  LlamaEngine engine(*std::move(model),
                     {.num_blocks = options.kv_blocks, .block_size = options.block_size});
  WorkerService service(&engine, options.rank, options.world_size);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + options.socket, grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(256 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    std::fprintf(stderr, "fms-worker rank %d: cannot listen on %s\n", options.rank,
                 options.socket.c_str());
    return 1;
  }
  int signal = 0;
  sigwait(&signals, &signal);
  server->Shutdown();
  return 0;
}

}  // namespace fms
