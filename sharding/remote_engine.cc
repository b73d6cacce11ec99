#include "sharding/remote_engine.h"

#include <grpcpp/grpcpp.h>

#include <future>
#include <memory>

#include "absl/strings/str_cat.h"
#include "batching/step_codec.h"

namespace fms {

absl::StatusOr<std::pair<RemoteEngine::Stubs, EngineInfo>> RemoteEngine::Open(
    const std::vector<std::string>& sockets) {
  Stubs stubs;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  for (const std::string& socket : sockets) {
    stubs.push_back(worker::WorkerService::NewStub(grpc::CreateCustomChannel(
        "unix:" + socket, grpc::InsecureChannelCredentials(), args)));
  }
  grpc::ClientContext context;
  worker::InfoRequest request;
  request.set_version(kWorkerProtocolVersion);
  worker::InfoResponse info;
  grpc::Status status = stubs.at(0)->Info(&context, request, &info);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("rank 0: ", status.error_message()));
  }
  EngineInfo facts{.num_blocks = info.num_blocks(),
                   .block_size = info.block_size(),
                   .vocab_size = info.vocab_size(),
                   .max_position_embeddings = info.max_position_embeddings(),
                   .eos_token_ids = {info.eos_token_ids().begin(), info.eos_token_ids().end()},
                   .non_finite_weights = {info.non_finite_weights().begin(),
                                          info.non_finite_weights().end()}};
  return std::make_pair(std::move(stubs), std::move(facts));
}

absl::StatusOr<std::unique_ptr<RemoteEngine>> RemoteEngine::Connect(
    const std::vector<std::string>& sockets) {
  auto opened = Open(sockets);
  if (!opened.ok()) return opened.status();
  std::unique_ptr<RemoteEngine> engine(new RemoteEngine);
  engine->stubs_ = std::move(opened->first);
  engine->info_ = std::move(opened->second);
  return engine;
}

absl::Status RemoteEngine::Reconnect(const std::vector<std::string>& sockets) {
  auto opened = Open(sockets);
  if (!opened.ok()) return opened.status();
  absl::MutexLock lock(&mu_);
  stubs_ = std::move(opened->first);
  ++generation_;
  return absl::OkStatus();
}

RemoteEngine::~RemoteEngine() { CloseStreams(); }

RemoteEngine::Stubs RemoteEngine::CurrentStubs() {
  absl::MutexLock lock(&mu_);
  return stubs_;
}

absl::StatusOr<AdapterInfo> RemoteEngine::LoadAdapter(const std::string& id,
                                                      const std::string& dir) {
  worker::LoadAdapterRequest request;
  request.set_id(id);
  request.set_dir(dir);
  struct Reply {
    grpc::Status status;
    worker::LoadAdapterResponse response;
  };
  const Stubs stubs = CurrentStubs();
  std::vector<std::future<Reply>> replies;
  for (const auto& stub : stubs) {
    replies.push_back(std::async(std::launch::async, [&request, stub] {
      Reply reply;
      grpc::ClientContext context;
      reply.status = stub->LoadAdapter(&context, request, &reply.response);
      return reply;
    }));
  }
  std::vector<Reply> done;
  for (auto& reply : replies) done.push_back(reply.get());
  for (const Reply& reply : done) {
    if (reply.status.ok()) continue;
    UnloadAdapter(id);
    return absl::Status(static_cast<absl::StatusCode>(reply.status.error_code()),
                        reply.status.error_message());
  }
  const worker::LoadAdapterResponse& r = done.front().response;
  return AdapterInfo{.peft_type = r.peft_type(), .virtual_tokens = r.virtual_tokens(),
                     .rank = r.rank(), .bytes = r.bytes()};
}

void RemoteEngine::UnloadAdapter(const std::string& id) {
  worker::UnloadAdapterRequest request;
  request.set_id(id);
  for (const auto& stub : CurrentStubs()) {
    grpc::ClientContext context;
    worker::UnloadAdapterResponse response;
    stub->UnloadAdapter(&context, request, &response);  // A lost rank forgets by itself.
  }
}

void RemoteEngine::EnsureStreams() {
  Stubs stubs;
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    stubs = stubs_;
    generation = generation_;
  }
  if (!streams_.empty() && streams_for_ == generation) return;
  CloseStreams();
  for (const auto& stub : stubs) {
    StepStream s{.context = std::make_unique<grpc::ClientContext>()};
    s.stream = stub->Steps(s.context.get());
    streams_.push_back(std::move(s));
  }
  streams_for_ = generation;
}

void RemoteEngine::CloseStreams() {
  for (StepStream& s : streams_) {
    if (s.finished) continue;
    s.context->TryCancel();
    s.stream->Finish();  // CANCELLED: nothing to report.
  }
  streams_.clear();
}

absl::Status RemoteEngine::RankError(size_t rank) {
  streams_[rank].finished = true;
  const grpc::Status status = streams_[rank].stream->Finish();
  const std::string message =
      status.ok() ? "the worker closed its step stream" : status.error_message();
  return absl::UnavailableError(absl::StrCat("rank ", rank, ": ", message));
}

absl::StatusOr<StepResult> RemoteEngine::Step(const StepPlan& plan) {
  const worker::StepPlan request = ToProto(plan);
  EnsureStreams();
  // Every rank gets the plan before any is waited on, so the ranks step
  // together; a write blocks only until gRPC has the message.
  absl::Status failed;
  size_t written = 0;
  for (; written < streams_.size(); ++written) {
    if (!streams_[written].stream->Write(request)) {
      failed = RankError(written);
      break;
    }
  }
  worker::StepResult rank0;
  worker::StepResult other;
  for (size_t rank = 0; rank < written; ++rank) {
    if (streams_[rank].stream->Read(rank == 0 ? &rank0 : &other)) continue;
    if (failed.ok()) failed = RankError(rank);
  }
  if (!failed.ok()) {
    CloseStreams();  // The next step opens new ones.
    return failed;
  }
  return FromProto(rank0);
}

}  // namespace fms
