// The /metrics families: TGIS's tgi_* names and labels (shared/docs/
// tgis-api.md section 5.1; every counter also as <name>_total), plus
// time-to-first-token, inter-token latency and free KV blocks. Thread-safe.

#ifndef FMS_SERVER_METRICS_H_
#define FMS_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <memory>
#include <optional>
#include <string>

#include "batching/batcher.h"

namespace fms {

struct MetricsLimits {
  uint32_t max_sequence_length = 2048;  // Upper bound of the length histograms.
  uint32_t max_new_tokens = 1024;
  int64_t kv_blocks = 0;  // Size of the KV pool (fms_kv_cache_blocks).
};

class ServerMetrics : public BatcherMetrics {
 public:
  explicit ServerMetrics(const MetricsLimits& limits);

  // BatcherMetrics, on the batcher thread.
  void OnStep(const StepStats& stats) override;
  void OnState(const QueueState& state) override;
  void OnAdmitted(double queue_seconds) override;

  // A Generate ("single" or "batch") or GenerateStream ("stream") call with
  // `inputs` inputs passed validation.
  void RequestStarted(const std::string& kind, int inputs);
  // err: validation, conc_limit, generate, cancelled, timeout, unknown.
  void RequestFailed(const std::string& err);
  // One input ended normally after `seconds` from arrival, `inference_seconds`
  // of them from its admission to the batch (none if it never got there).
  void InputSucceeded(const std::string& kind, const std::string& stop_reason,
                      uint32_t input_tokens, uint32_t generated_tokens, double seconds,
                      std::optional<double> inference_seconds);
  void FirstToken(double seconds);    // From arrival.
  void InterToken(double seconds);    // Between consecutive tokens.
  void Tokenized(int inputs, int64_t tokens, double seconds);

  // Prometheus text exposition format.
  std::string Serialize() const;

 private:
  // A counter family registered as both `name` and `name_total`.
  struct DualCounter {
    prometheus::Family<prometheus::Counter>* plain;
    prometheus::Family<prometheus::Counter>* total;
    void Increment(const prometheus::Labels& labels, double by = 1);
  };
  DualCounter Counter(const std::string& name, const std::string& help);
  prometheus::Histogram& Histogram(const std::string& name, const std::string& help,
                                   const prometheus::Histogram::BucketBoundaries& buckets);
  prometheus::Gauge& Gauge(const std::string& name, const std::string& help);

  std::shared_ptr<prometheus::Registry> registry_;
  DualCounter request_count_, request_input_count_, request_failure_, request_success_;
  DualCounter batch_inference_count_, tokenize_count_, tokenize_input_count_;
  prometheus::Histogram* queue_duration_;
  prometheus::Histogram* request_duration_;
  prometheus::Histogram* inference_duration_;
  prometheus::Histogram* generated_tokens_;
  prometheus::Histogram* input_length_;
  prometheus::Histogram* total_tokens_;
  prometheus::Histogram* batch_duration_;
  prometheus::Histogram* batch_size_;
  prometheus::Histogram* tokenize_tokens_;
  prometheus::Histogram* tokenize_duration_;
  prometheus::Histogram* time_to_first_token_;
  prometheus::Histogram* inter_token_latency_;
  prometheus::Gauge* queue_size_;
  prometheus::Gauge* batch_current_size_;
  prometheus::Gauge* kv_free_blocks_;
  prometheus::Counter* preemptions_;
  // fms_step_phase_seconds by phase, resolved once: decode, wait, prepare,
  // forward, sample, encode (StepTimings' order), then rpc.
  std::array<prometheus::Histogram*, 7> step_phases_;
  prometheus::Counter* prefix_queries_;
  prometheus::Counter* prefix_hits_;
  prometheus::Gauge* prefix_cached_blocks_;
};

}  // namespace fms

#endif  // FMS_SERVER_METRICS_H_
