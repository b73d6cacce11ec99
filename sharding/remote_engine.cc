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

absl::StatusOr<StepResult> RemoteEngine::Step(const StepPlan& plan) {
  const worker::StepPlan request = ToProto(plan);
  struct Reply {
    grpc::Status status;
    worker::StepResult result;
  };
  const Stubs stubs = CurrentStubs();
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
