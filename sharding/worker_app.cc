#include "sharding/worker_app.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "model/llama_engine.h"
#include "model/malloc_tuning.h"
#include "model/torch_threads.h"
#include "sharding/process_group.h"
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
    else if (flag == "--device") o.device = value;
    else if (flag == "--master-addr") o.master_addr = value;
    else if (flag == "--master-port") ok = absl::SimpleAtoi(value, &o.master_port);
    else if (flag == "--rank") ok = absl::SimpleAtoi(value, &o.rank);
    else if (flag == "--world-size") ok = absl::SimpleAtoi(value, &o.world_size);
    else if (flag == "--threads") ok = absl::SimpleAtoi(value, &o.threads);
    else if (flag == "--max-sequence-length") ok = absl::SimpleAtoi(value, &o.max_sequence_length);
    else if (flag == "--kv-budget-bytes") ok = absl::SimpleAtoi(value, &o.kv_budget_bytes);
    else if (flag == "--block-size") ok = absl::SimpleAtoi(value, &o.block_size);
    else return absl::InvalidArgumentError(absl::StrCat("unknown flag ", flag));
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("bad value for ", flag, ": ", value));
  }
  if (o.model.empty() || o.socket.empty()) {
    return absl::InvalidArgumentError("--model and --socket are required");
  }
  if (o.device != "auto" && o.device != "cpu" && o.device != "cuda") {
    return absl::InvalidArgumentError("--device must be auto, cpu or cuda");
  }
  return o;
}

namespace {

// Rank r runs on cuda:r, or on the CPU (with its share of the cores).
absl::StatusOr<at::Device> RankDevice(const WorkerOptions& o) {
  const bool cuda = o.device == "cuda" || (o.device == "auto" && at::hasCUDA());
  if (!cuda) return at::Device(at::kCPU);
  const size_t devices = at::hasCUDA() ? at::getNumGPUs() : 0;
  if (static_cast<size_t>(o.rank) >= devices) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device for rank ", o.rank, " (", devices, " visible)"));
  }
  return at::Device(at::kCUDA, static_cast<at::DeviceIndex>(o.rank));
}

int Fail(const WorkerOptions& options, const absl::Status& status) {
  std::fprintf(stderr, "fms-worker rank %d: %s\n", options.rank,
               std::string(status.message()).c_str());
  return 1;
}

// The model and its engine, built on the calling thread (the compute
// thread); `group` is filled for tensor parallelism and must outlive them.
absl::StatusOr<std::unique_ptr<LlamaEngine>> LoadEngine(const WorkerOptions& options,
                                                         std::unique_ptr<Collectives>& group) {
  ConfigureTorchThreads({.intra_op_threads = options.threads});
  const at::ScalarType dtype = options.dtype == "bfloat16" ? at::kBFloat16
                               : options.dtype == "float16" ? at::kHalf
                                                            : at::kFloat;
  auto device = RankDevice(options);
  if (!device.ok()) return device.status();
  if (options.world_size > 1) {
    auto joined = JoinProcessGroup({.rank = options.rank, .world_size = options.world_size,
                                    .master_addr = options.master_addr,
                                    .master_port = options.master_port, .device = *device});
    if (!joined.ok()) return joined.status();
    group = *std::move(joined);
  }
  auto model = LlamaModel::Load(
      options.model, {.dtype = dtype, .device = *device, .collectives = group.get()});
  if (!model.ok()) return model.status();
  const LlamaConfig& config = (*model)->config();
  const int64_t blocks = KvPoolBlocks(
      {.max_sequence_length = options.max_sequence_length > 0 ? options.max_sequence_length
                                                               : config.max_position_embeddings,
       .budget_bytes = options.kv_budget_bytes,
       .block_size = options.block_size},
      config.num_layers, (*model)->layout().kv_heads, config.head_dim,
      static_cast<int64_t>(c10::elementSize(dtype)));
  return std::make_unique<LlamaEngine>(
      *std::move(model), KvCacheOptions{.num_blocks = blocks, .block_size = options.block_size});
}

}  // namespace

int RunWorker(const WorkerOptions& options) {
  sigset_t signals;  // SIGTERM is taken by sigwait below, on this thread.
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  TuneMallocForModel();
  // Every LibTorch op of the model runs on this one thread, loading included.
  // libgomp gives each thread that opens a parallel region a pool of its own;
  // with a second pool (the loader's) it counted more threads than cores and
  // put idle threads to sleep after a few spins instead of ~300,000, so every
  // region of a decode step paid a futex wake-up (docs/benchmarks.md, "One
  // OpenMP pool").
  ComputeThread compute;
  std::unique_ptr<Collectives> group;  // Outlives the engine below.
  absl::StatusOr<std::unique_ptr<LlamaEngine>> engine;
  compute.Run([&] { engine = LoadEngine(options, group); });
  if (!engine.ok()) return Fail(options, engine.status());
  WorkerService service(engine->get(), &compute, options.rank, options.world_size);
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
  // The front end has drained before it signals; an open connection would
  // otherwise hold a plain Shutdown() for seconds (gRPC's sync server polls).
  server->Shutdown(std::chrono::system_clock::now());
  return 0;
}

}  // namespace fms
