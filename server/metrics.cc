#include "server/metrics.h"

#include <prometheus/text_serializer.h>

#include <cmath>

namespace fms {
namespace {

// TGIS's duration buckets: 35 geometric steps, 0.00015 s * 1.5^k.
prometheus::Histogram::BucketBoundaries DurationBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (int k = 0; k < 35; ++k) b.push_back(0.00015 * std::pow(1.5, k));
  return b;
}

// 64 linear buckets up to `max`.
prometheus::Histogram::BucketBoundaries LinearBuckets(double max) {
  prometheus::Histogram::BucketBoundaries b;
  for (int k = 1; k <= 64; ++k) b.push_back(max * k / 64);
  return b;
}

prometheus::Histogram::BucketBoundaries PowersOfTwo(double from, double to) {
  prometheus::Histogram::BucketBoundaries b;
  for (double v = from; v <= to; v *= 2) b.push_back(v);
  return b;
}

}  // namespace

void ServerMetrics::DualCounter::Increment(const prometheus::Labels& labels, double by) {
  plain->Add(labels).Increment(by);
  total->Add(labels).Increment(by);
}

ServerMetrics::DualCounter ServerMetrics::Counter(const std::string& name,
                                                  const std::string& help) {
  return {&prometheus::BuildCounter().Name(name).Help(help).Register(*registry_),
          &prometheus::BuildCounter().Name(name + "_total").Help(help).Register(*registry_)};
}

prometheus::Histogram& ServerMetrics::Histogram(
    const std::string& name, const std::string& help,
    const prometheus::Histogram::BucketBoundaries& buckets) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_).Add({}, buckets);
}

prometheus::Gauge& ServerMetrics::Gauge(const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
}

ServerMetrics::ServerMetrics(const MetricsLimits& limits)
    : registry_(std::make_shared<prometheus::Registry>()) {
  const auto durations = DurationBuckets();
  request_count_ = Counter("tgi_request_count", "Generate and GenerateStream calls");
  request_input_count_ = Counter("tgi_request_input_count", "Generation inputs");
  request_failure_ = Counter("tgi_request_failure", "Failed requests by cause");
  request_success_ = Counter("tgi_request_success", "Inputs completed, by stop reason");
  batch_inference_count_ = Counter("tgi_batch_inference_count", "Engine steps");
  tokenize_count_ = Counter("tgi_tokenize_request_count", "Tokenize calls");
  tokenize_input_count_ = Counter("tgi_tokenize_request_input_count", "Tokenize inputs");
  queue_duration_ = &Histogram("tgi_request_queue_duration", "Seconds in the queue", durations);
  request_duration_ = &Histogram("tgi_request_duration", "Seconds per successful input", durations);
  inference_duration_ = &Histogram("tgi_request_inference_duration",
                                   "Seconds from admission to the end, per successful input",
                                   durations);
  generated_tokens_ = &Histogram("tgi_request_generated_tokens", "Tokens generated per input",
                                 LinearBuckets(limits.max_new_tokens));
  input_length_ = &Histogram("tgi_request_input_length", "Input tokens per input",
                             LinearBuckets(limits.max_sequence_length));
  total_tokens_ = &Histogram("tgi_request_total_tokens", "Input plus generated tokens",
                             LinearBuckets(limits.max_sequence_length));
  batch_duration_ = &Histogram("tgi_batch_inference_duration", "Seconds per engine step", durations);
  batch_size_ = &Histogram("tgi_batch_inference_batch_size", "Sequences per engine step",
                           PowersOfTwo(1, 1024));
  tokenize_tokens_ = &Histogram("tgi_tokenize_request_tokens", "Tokens per Tokenize call",
                                PowersOfTwo(64, 524288));
  tokenize_duration_ = &Histogram("tgi_tokenize_request_duration", "Tokenize seconds", durations);
  time_to_first_token_ = &Histogram("fms_time_to_first_token_seconds",
                                    "Seconds from arrival to the first token", durations);
  inter_token_latency_ = &Histogram("fms_inter_token_latency_seconds",
                                    "Seconds between consecutive tokens of an input", durations);
  queue_size_ = &Gauge("tgi_queue_size", "Inputs waiting");
  batch_current_size_ = &Gauge("tgi_batch_current_size", "Sequences in the running batch");
  kv_free_blocks_ = &Gauge("fms_kv_cache_free_blocks", "Free KV cache blocks");
  auto& phases = prometheus::BuildHistogram()
                     .Name("fms_step_phase_seconds")
                     .Help("Where an engine step's time goes: rank 0's decode, wait, prepare, "
                           "forward, sample and encode; rpc is the rest of the step")
                     .Register(*registry_);
  const char* phase_names[] = {"decode", "wait", "prepare", "forward", "sample", "encode", "rpc"};
  for (size_t i = 0; i < step_phases_.size(); ++i) {
    step_phases_[i] = &phases.Add({{"phase", phase_names[i]}}, PowersOfTwo(1e-5, 11));
  }
  preemptions_ = &prometheus::BuildCounter()
                      .Name("fms_preemptions_total")
                      .Help("Sequences preempted for KV cache room (recomputed later)")
                      .Register(*registry_)
                      .Add({});
  // vLLM's prefix_cache_queries / prefix_cache_hits: hit rate = hits / queries.
  prefix_queries_ = &prometheus::BuildCounter()
                         .Name("fms_prefix_cache_queries_total")
                         .Help("Prompt tokens looked up in the prefix cache at admission")
                         .Register(*registry_)
                         .Add({});
  prefix_hits_ = &prometheus::BuildCounter()
                      .Name("fms_prefix_cache_hits_total")
                      .Help("Prompt tokens found in the prefix cache (not computed)")
                      .Register(*registry_)
                      .Add({});
  prefix_cached_blocks_ = &Gauge("fms_prefix_cache_blocks",
                                 "KV cache blocks holding a reusable prefix (held or free)");
  kv_free_blocks_->Set(static_cast<double>(limits.kv_blocks));
  Gauge("fms_kv_cache_blocks", "KV cache blocks in the pool").Set(static_cast<double>(limits.kv_blocks));
}

void ServerMetrics::OnStep(const StepStats& s) {
  batch_inference_count_.Increment({{"method", "next_token"}});
  batch_duration_->Observe(s.step_seconds);
  batch_size_->Observe(static_cast<double>(s.batch_size));
  preemptions_->Increment(static_cast<double>(s.preemptions));
  const StepTimings& w = s.worker;
  const int64_t micros[] = {w.decode_us,  w.wait_us,   w.prepare_us,
                            w.forward_us, w.sample_us, w.encode_us};
  double worker_seconds = 0;
  for (size_t i = 0; i < std::size(micros); ++i) {
    step_phases_[i]->Observe(1e-6 * static_cast<double>(micros[i]));
    worker_seconds += 1e-6 * static_cast<double>(micros[i]);
  }
  step_phases_.back()->Observe(std::max(s.step_seconds - worker_seconds, 0.0));
  prefix_queries_->Increment(static_cast<double>(s.prefix_queries));
  prefix_hits_->Increment(static_cast<double>(s.prefix_hits));
}

void ServerMetrics::OnState(const QueueState& s) {
  queue_size_->Set(static_cast<double>(s.waiting));
  batch_current_size_->Set(static_cast<double>(s.running));
  kv_free_blocks_->Set(static_cast<double>(s.free_blocks));
  prefix_cached_blocks_->Set(static_cast<double>(s.cached_blocks));
}

void ServerMetrics::OnAdmitted(double queue_seconds) { queue_duration_->Observe(queue_seconds); }


void ServerMetrics::RequestStarted(const std::string& kind, int inputs) {
  request_count_.Increment({{"kind", kind}});
  request_input_count_.Increment({}, inputs);
}

void ServerMetrics::RequestFailed(const std::string& err) {
  request_failure_.Increment({{"err", err}});
}

void ServerMetrics::InputSucceeded(const std::string& kind, const std::string& stop_reason,
                                   uint32_t input_tokens, uint32_t generated_tokens,
                                   double seconds, std::optional<double> inference_seconds) {
  request_success_.Increment({{"stop_reason", stop_reason}, {"kind", kind}});
  generated_tokens_->Observe(generated_tokens);
  input_length_->Observe(input_tokens);
  total_tokens_->Observe(input_tokens + generated_tokens);
  request_duration_->Observe(seconds);
  if (inference_seconds.has_value()) inference_duration_->Observe(*inference_seconds);
}

void ServerMetrics::FirstToken(double seconds) { time_to_first_token_->Observe(seconds); }
void ServerMetrics::InterToken(double seconds) { inter_token_latency_->Observe(seconds); }

void ServerMetrics::Tokenized(int inputs, int64_t tokens, double seconds) {
  tokenize_count_.Increment({});
  tokenize_input_count_.Increment({}, inputs);
  tokenize_tokens_->Observe(static_cast<double>(tokens));
  tokenize_duration_->Observe(seconds);
}

std::string ServerMetrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace fms
