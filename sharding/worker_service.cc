#include "sharding/worker_service.h"

#include <chrono>

#include "batching/step_codec.h"
#include "model/torch_threads.h"

namespace fms {
namespace {

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace

grpc::Status WorkerService::Info(grpc::ServerContext*, const worker::InfoRequest* request,
                                 worker::InfoResponse* response) {
  if (request->version() != kWorkerProtocolVersion) {
    return grpc::Status(grpc::FAILED_PRECONDITION, "worker protocol version mismatch");
  }
  const EngineInfo info = engine_->Info();
  response->set_version(kWorkerProtocolVersion);
  response->set_rank(rank_);
  response->set_world_size(world_size_);
  response->set_num_blocks(info.num_blocks);
  response->set_block_size(info.block_size);
  response->set_vocab_size(info.vocab_size);
  response->set_max_position_embeddings(info.max_position_embeddings);
  response->mutable_eos_token_ids()->Add(info.eos_token_ids.begin(), info.eos_token_ids.end());
  for (const std::string& name : info.non_finite_weights) response->add_non_finite_weights(name);
  return grpc::Status::OK;
}

grpc::Status WorkerService::Steps(
    grpc::ServerContext*,
    grpc::ServerReaderWriter<worker::StepResult, worker::StepPlan>* stream) {
  worker::StepPlan request;
  worker::StepResult response;
  while (stream->Read(&request)) {
    const grpc::Status status = RunStep(request, &response);
    if (!status.ok()) return status;
    if (!stream->Write(response)) break;  // The front end has gone.
  }
  return grpc::Status::OK;
}

grpc::Status WorkerService::RunStep(const worker::StepPlan& request,
                                    worker::StepResult* response) {
  using Clock = std::chrono::steady_clock;
  auto micros = [](Clock::duration d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  };
  const Clock::time_point received = Clock::now();
  auto plan = FromProto(request);
  if (!plan.ok()) return ToGrpc(plan.status());
  const Clock::time_point decoded = Clock::now();
  absl::StatusOr<StepResult> result;
  Clock::time_point started;
  compute_->Run([&] {
    started = Clock::now();
    result = engine_->Step(*plan);
  });
  if (!result.ok()) return ToGrpc(result.status());
  result->timings.decode_us = micros(decoded - received);
  result->timings.wait_us = micros(started - decoded);
  const Clock::time_point encoding = Clock::now();
  *response = ToProto(*result);
  response->mutable_timings()->set_encode_us(micros(Clock::now() - encoding));
  return grpc::Status::OK;
}

grpc::Status WorkerService::LoadAdapter(grpc::ServerContext*,
                                        const worker::LoadAdapterRequest* request,
                                        worker::LoadAdapterResponse* response) {
  SerialTorchOnThisThread();  // Not a second OpenMP pool (torch_threads.h).
  auto info = engine_->LoadAdapter(request->id(), request->dir());
  if (!info.ok()) return ToGrpc(info.status());
  response->set_peft_type(info->peft_type);
  response->set_virtual_tokens(info->virtual_tokens);
  response->set_rank(info->rank);
  response->set_bytes(info->bytes);
  return grpc::Status::OK;
}

grpc::Status WorkerService::UnloadAdapter(grpc::ServerContext*,
                                          const worker::UnloadAdapterRequest* request,
                                          worker::UnloadAdapterResponse*) {
  engine_->UnloadAdapter(request->id());
  return grpc::Status::OK;
}

grpc::Status WorkerService::Health(grpc::ServerContext*, const worker::HealthRequest*,
                                   worker::HealthResponse* response) {
  response->set_serving(true);
  return grpc::Status::OK;
}

}  // namespace fms
