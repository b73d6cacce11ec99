#include "server/generation_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace fms {
namespace {

// How often a waiting call checks that its client is still there.
constexpr absl::Duration kCancelPoll = absl::Milliseconds(50);

std::string CorrelationId(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("x-correlation-id");
  return it == metadata.end() ? "" : std::string(it->second.data(), it->second.size());
}

// vllm-tgis-adapter: adapter_id, else prefix_id (TGIS's name) for
// compatibility.
template <typename RequestProto>
std::string AdapterIdOf(const RequestProto& request) {
  return request.adapter_id().empty() ? request.prefix_id() : request.adapter_id();
}

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

// Releases concurrency permits when a call ends, however it ends.
class Permits {
 public:
  Permits(std::atomic<int64_t>* counter, uint32_t n) : counter_(counter), n_(n) {}
  ~Permits() { *counter_ -= n_; }

 private:
  std::atomic<int64_t>* counter_;
  uint32_t n_;
};

}  // namespace

void GenerationService::Activate(Batcher* batcher, GenerationServiceOptions options) {
  batcher_ = batcher;
  options_ = std::move(options);
  admission_ = std::make_unique<DeadlineAdmission>(options_.max_batch_size);
  active_.store(batcher, std::memory_order_release);
}

grpc::Status GenerationService::Overloaded() const {
  if (options_.context.metrics != nullptr) options_.context.metrics->RequestFailed("conc_limit");
  return grpc::Status(grpc::RESOURCE_EXHAUSTED, "Model is overloaded");
}

grpc::Status GenerationService::CheckAvailable() const {
  if (active_.load(std::memory_order_acquire) == nullptr) {
    return grpc::Status(grpc::UNAVAILABLE, "the model is still loading");
  }
  // Counted (err="unavailable", beyond TGIS's causes, which has no restart)
  // so that /metrics accounts for every call a client made.
  const char* why = !accepting_ ? "the server is shutting down"
                    : !healthy_ ? "the model workers are restarting"
                                : nullptr;
  if (why == nullptr) return grpc::Status::OK;
  if (options_.context.metrics != nullptr) options_.context.metrics->RequestFailed("unavailable");
  return grpc::Status(grpc::UNAVAILABLE, why);
}

bool GenerationService::Acquire(const grpc::ServerContext& context, uint32_t n) {
  const auto deadline = context.deadline();
  if (deadline != std::chrono::system_clock::time_point::max() &&
      admission_->WouldMiss(absl::FromChrono(deadline), absl::Now(), in_flight_.load(), n)) {
    return false;
  }
  int64_t current = in_flight_.load();
  do {
    if (current + n > options_.max_concurrent_requests) return false;
  } while (!in_flight_.compare_exchange_weak(current, current + n));
  return true;
}

void GenerationService::RecordFinished(const Runs& runs) {
  for (const auto& run : runs) {
    if (const std::optional<double> seconds = run->inference_seconds(); seconds.has_value()) {
      admission_->RecordInference(*seconds);
    }
  }
}

absl::StatusOr<std::shared_ptr<const AdapterLease>> GenerationService::LeaseAdapter(
    const std::string& adapter_id) {
  if (adapter_id.empty()) return nullptr;
  if (options_.adapters == nullptr) {
    return absl::InvalidArgumentError("adapter_id supplied but no adapter store was configured");
  }
  return options_.adapters->Acquire(adapter_id);
}

absl::StatusOr<GenerationService::Runs> GenerationService::Prepare(
    const fmaas::Parameters* params, const std::vector<const std::string*>& texts,
    const std::string& adapter_id) {
  auto resolved = ResolveParameters(params, options_.limits);
  absl::StatusOr<std::shared_ptr<const AdapterLease>> adapter = nullptr;
  if (resolved.ok()) adapter = LeaseAdapter(adapter_id);
  if (!resolved.ok() || !adapter.ok()) {
    if (options_.context.metrics != nullptr) options_.context.metrics->RequestFailed("validation");
    return resolved.ok() ? adapter.status() : resolved.status();
  }
  Runs runs;
  for (const std::string* text : texts) {
    uint32_t seed;
    {
      absl::MutexLock lock(&rng_mu_);
      seed = absl::Uniform<uint32_t>(rng_);  // A random 32-bit seed per input.
    }
    auto run = GenerationRun::Create(*text, *resolved, options_.context, seed, *adapter);
    if (!run.ok()) {
      if (options_.context.metrics != nullptr) {
        options_.context.metrics->RequestFailed("validation");
      }
      return run.status();
    }
    runs.push_back(*std::move(run));
  }
  return runs;
}

absl::StatusOr<std::vector<SequenceId>> GenerationService::Submit(
    const Runs& runs, const std::shared_ptr<EventQueue>& queue) {
  std::vector<SequenceId> ids;
  for (size_t i = 0; i < runs.size(); ++i) {
    // The sink outlives the call (a final event may follow a cancel): it
    // holds the queue, never the run.
    auto id = batcher_->Submit(runs[i]->request(),
                               [queue, i](const SequenceEvent& event) { queue->Push(i, event); });
    if (!id.ok()) {
      for (SequenceId submitted : ids) batcher_->Cancel(submitted);
      return id.status();
    }
    ids.push_back(*id);
  }
  return ids;
}

bool GenerationService::Deliver(EventQueue& queue, const Runs& runs,
                                const std::vector<SequenceId>& ids,
                                grpc::ServerContext& context) {
  for (QueuedEvent& queued : queue.Take(kCancelPoll)) {
    if (runs[queued.input]->OnEvent(queued.event, queued.received)) {
      batcher_->Finish(ids[queued.input], FinishReason::kStopSequence);
    }
  }
  return !context.IsCancelled();
}

grpc::Status GenerationService::Generate(grpc::ServerContext* context,
                                         const fmaas::BatchedGenerationRequest* request,
                                         fmaas::BatchedGenerationResponse* response) {
  if (grpc::Status s = CheckAvailable(); !s.ok()) return s;
  const uint32_t n = static_cast<uint32_t>(request->requests_size());
  if (n == 0) return grpc::Status::OK;
  std::vector<const std::string*> texts;
  for (const auto& r : request->requests()) texts.push_back(&r.text());
  auto runs = Prepare(request->has_params() ? &request->params() : nullptr, texts,
                      AdapterIdOf(*request));
  if (!runs.ok()) return ToGrpc(runs.status());
  if (!Acquire(*context, n)) return Overloaded();
  Permits permits(&in_flight_, n);
  const std::string kind = n == 1 ? "single" : "batch";
  for (const auto& run : *runs) {
    run->set_kind(kind);
    run->set_log_context("Generate", CorrelationId(*context));
  }
  if (options_.context.metrics != nullptr) options_.context.metrics->RequestStarted(kind, n);
  auto queue = std::make_shared<EventQueue>();
  auto ids = Submit(*runs, queue);
  if (!ids.ok()) return ToGrpc(ids.status());
  const auto cancel_all = [&] {
    for (SequenceId id : *ids) batcher_->Cancel(id);
  };
  for (;;) {
    if (!Deliver(*queue, *runs, *ids, *context)) {
      cancel_all();
      return grpc::Status(grpc::CANCELLED, "the client cancelled");
    }
    bool all_done = true;
    for (const auto& run : *runs) {
      if (run->done() && !run->Result().ok()) {  // The batch fails as a whole.
        cancel_all();
        return ToGrpc(run->Result().status());
      }
      all_done &= run->done();
    }
    if (all_done) break;
  }
  RecordFinished(*runs);
  for (const auto& run : *runs) *response->add_responses() = *run->Result();
  return grpc::Status::OK;
}

grpc::Status GenerationService::GenerateStream(
    grpc::ServerContext* context, const fmaas::SingleGenerationRequest* request,
    grpc::ServerWriter<fmaas::GenerationResponse>* writer) {
  if (grpc::Status s = CheckAvailable(); !s.ok()) return s;
  if (!request->has_request()) return grpc::Status(grpc::INVALID_ARGUMENT, "missing request");
  auto runs = Prepare(request->has_params() ? &request->params() : nullptr,
                      {&request->request().text()}, AdapterIdOf(*request));
  if (!runs.ok()) return ToGrpc(runs.status());
  if (!Acquire(*context, 1)) return Overloaded();
  Permits permits(&in_flight_, 1);
  GenerationRun& run = *runs->front();
  run.set_kind("stream");
  run.set_log_context("GenerateStream", CorrelationId(*context));
  if (options_.context.metrics != nullptr) options_.context.metrics->RequestStarted("stream", 1);
  writer->Write(run.FirstMessage());  // Right after validation, before queueing.
  auto queue = std::make_shared<EventQueue>();
  auto ids = Submit(*runs, queue);
  if (!ids.ok()) return ToGrpc(ids.status());
  fmaas::GenerationResponse message;
  while (!run.done()) {
    bool connected = Deliver(*queue, *runs, *ids, *context);
    while (connected && run.NextMessage(&message)) connected = writer->Write(message);
    if (!connected) {  // The client went away.
      batcher_->Cancel(ids->front());
      return grpc::Status(grpc::CANCELLED, "the client cancelled");
    }
  }
  const absl::Status status = run.Result().status();
  if (!status.ok()) batcher_->Cancel(ids->front());
  if (status.ok()) RecordFinished(*runs);
  return ToGrpc(status);
}

grpc::Status GenerationService::Tokenize(grpc::ServerContext*,
                                         const fmaas::BatchedTokenizeRequest* request,
                                         fmaas::BatchedTokenizeResponse* response) {
  if (active_.load(std::memory_order_acquire) == nullptr) {
    return grpc::Status(grpc::UNAVAILABLE, "the model is still loading");
  }
  // Validated (and loaded) as for Generate, as vllm-tgis-adapter does; the
  // base model's tokenizer serves every adapter.
  if (auto adapter = LeaseAdapter(AdapterIdOf(*request)); !adapter.ok()) {
    return ToGrpc(adapter.status());
  }
  const Tokenizer& tokenizer = *options_.context.tokenizer;
  const Clock::time_point start = Clock::now();
  int64_t total_tokens = 0;
  for (const auto& input : request->requests()) {
    // The same encoding as Generate's; only Generate writes BOS over a
    // truncated prompt's first token (GenerationRun::Create).
    auto prompt = EncodePrompt(tokenizer, input.text(), request->truncate_input_tokens(),
                               options_.context.add_special_tokens);
    if (!prompt.ok()) return ToGrpc(prompt.status());
    const Encoding& encoding = prompt->encoding;
    fmaas::TokenizeResponse* out = response->add_responses();
    const size_t count = encoding.ids.size();
    out->set_token_count(static_cast<uint32_t>(count));
    total_tokens += static_cast<int64_t>(count);
    for (size_t i = 0; i < count; ++i) {
      if (request->return_tokens()) {
        out->add_tokens(std::string(tokenizer.IdToPiece(encoding.ids[i])));
      }
      if (request->return_offsets()) {
        fmaas::TokenizeResponse::Offset* offset = out->add_offsets();
        offset->set_start(encoding.begins[i]);
        offset->set_end(encoding.ends[i]);
      }
    }
  }
  if (options_.context.metrics != nullptr) {
    options_.context.metrics->Tokenized(
        request->requests_size(), total_tokens,
        std::chrono::duration<double>(Clock::now() - start).count());
  }
  return grpc::Status::OK;
}

grpc::Status GenerationService::ModelInfo(grpc::ServerContext*, const fmaas::ModelInfoRequest*,
                                          fmaas::ModelInfoResponse* response) {
  if (active_.load(std::memory_order_acquire) == nullptr) {
    return grpc::Status(grpc::UNAVAILABLE, "the model is still loading");
  }
  response->set_model_kind(fmaas::ModelInfoResponse::DECODER_ONLY);
  response->set_max_sequence_length(options_.limits.max_sequence_length);
  response->set_max_new_tokens(options_.limits.max_new_tokens);
  return grpc::Status::OK;
}

}  // namespace fms
