#include "sharding/remote_engine.h"

#include <grpcpp/grpcpp.h>

#include <future>

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
  return absl::OkStatus();
}

absl::StatusOr<StepResult> RemoteEngine::Step(const StepPlan& plan) {
  const worker::StepPlan request = ToProto(plan);
  struct Reply {
    grpc::Status status;
    worker::StepResult result;
  };
  Stubs stubs;
  {
    absl::MutexLock lock(&mu_);
    stubs = stubs_;
  }
  auto call = [&request](const std::shared_ptr<worker::WorkerService::Stub>& stub) {
    Reply reply;
    grpc::ClientContext context;
    reply.status = stub->Step(&context, request, &reply.result);
    return reply;
  };
  // Ranks 1.. on their own threads, rank 0 on this one: no thread per step
  // for NUM_SHARD=1.
  std::vector<std::future<Reply>> others;
  for (size_t rank = 1; rank < stubs.size(); ++rank) {
    others.push_back(std::async(std::launch::async, [&, rank] { return call(stubs[rank]); }));
  }
  std::vector<Reply> done;
  done.push_back(call(stubs[0]));
  for (auto& reply : others) done.push_back(reply.get());
  for (size_t rank = 0; rank < done.size(); ++rank) {
    if (!done[rank].status.ok()) {
      return absl::UnavailableError(
          absl::StrCat("rank ", rank, ": ", done[rank].status.error_message()));
    }
  }
  return FromProto(done[0].result);
}

}  // namespace fms
