// model_bench: prefill and decode throughput of LlamaModel on this machine,
// with a STREAM-style read-bandwidth figure and the decode roofline it
// implies. Not a test: tools/bench_model.py runs it and writes the table.
//
//   model_bench (--model DIR | --random llama2-7b [--layers N]) [--device cpu|cuda]
//               [--dtype float32|bfloat16] [--threads 2]
//               [--batches 1,8,32] [--prompt 128] [--steps 16]
//               [--adapters DIR,DIR,...]
//
// Prints one JSON object per line: per batch size, prefill and decode
// tokens/s with the achieved GB/s (weights + KV cache read per decode step)
// and TFLOP/s. A step is timed to its logits on the host, as the engine
// uses them. --random builds the named shape with random weights on the
// device (no checkpoint needed). --adapters loads those PEFT adapters (their
// load times are printed) and gives sequence b adapter b % count: the cost of
// LoRA in a mixed batch (tools/bench_adapters.py).

#include <ATen/Parallel.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "model/llama_model.h"
#include "model/malloc_tuning.h"
#include "model/random_weights.h"
#include "model/sampling.h"
#include "model/torch_threads.h"
#include "nlohmann/json.hpp"

namespace fms {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string model;
  std::string random;  // "llama2-7b": random weights of that shape.
  int64_t layers = 0;  // With --random: fewer layers of the same shape; 0: all.
  std::string device = "cpu";
  std::string dtype = "float32";
  int threads = 2;
  std::vector<int64_t> batches = {1, 8, 32};
  int64_t prompt = 128;  // Prompt tokens per sequence.
  int64_t steps = 16;    // Timed decode steps.
  bool eager_baseline = false;  // Unfused projections, per-sequence attention.
  std::vector<std::string> adapters;  // Adapter directories, spread over the batch.
};

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Bytes per second of a parallel sum over a buffer far larger than the caches.
double ReadBandwidth(at::Device device) {
  const at::Tensor buffer = at::ones({int64_t{1} << 28}, at::TensorOptions(device));  // 1 GiB
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    const float sum = buffer.sum().item<float>();
    const double seconds = Seconds(start);
    if (sum > 0) best = std::max(best, buffer.nbytes() / seconds);
  }
  return best;
}

// Bytes a decode step must read: every weight but the embedding table (only
// B rows of it are gathered); a tied lm_head is the embedding table.
double WeightBytesPerStep(const LlamaConfig& c, at::ScalarType dtype) {
  const double h = c.hidden_size, d = c.head_dim;
  const double per_layer = h * (c.num_heads + 2 * c.num_kv_heads) * d +
                           c.num_heads * d * h + 3 * h * c.intermediate_size + 2 * h;
  const double params = c.num_layers * per_layer + h + c.vocab_size * h;
  return params * at::elementSize(dtype);
}

// Multiply-adds of the projections per token, times 2.
double FlopsPerToken(const LlamaConfig& c) {
  return 2.0 * WeightBytesPerStep(c, at::kByte);
}

// Attention's QK^T and PV flops for `queries` new tokens after `context`
// cached ones (causal within the new tokens).
double AttentionFlops(const LlamaConfig& c, double context, double queries) {
  const double keys = context * queries + queries * (queries + 1) / 2;
  return 4.0 * c.num_layers * c.num_heads * c.head_dim * keys;
}

double KvBytes(const LlamaConfig& c, double tokens, at::ScalarType dtype) {
  return 2.0 * c.num_layers * c.num_kv_heads * c.head_dim * tokens * at::elementSize(dtype);
}

nlohmann::json RunBatch(const LlamaModel& model, const BenchOptions& o, int64_t batch,
                        const std::vector<std::shared_ptr<const Adapter>>& adapters) {
  const int64_t block_size = 16;
  const int64_t blocks_per_seq = (o.prompt + o.steps + 1 + block_size - 1) / block_size;
  KvCache cache = model.MakeCache({.num_blocks = batch * blocks_per_seq,
                                   .block_size = block_size});
  ForwardBatch step;
  for (int64_t b = 0; b < batch; ++b) {
    SequenceChunk s;
    s.num_tokens = o.prompt;
    if (!adapters.empty()) s.adapter = adapters[b % adapters.size()].get();
    for (int64_t i = 0; i < blocks_per_seq; ++i) {
      s.block_table.push_back(static_cast<int32_t>(b * blocks_per_seq + i));
    }
    for (int64_t i = 0; i < o.prompt; ++i) {
      step.token_ids.push_back(static_cast<int32_t>((b * 7919 + i * 104729) % 30000 + 3));
    }
    step.sequences.push_back(std::move(s));
  }
  const SamplingParams greedy;
  const std::vector<SamplingInput> inputs(batch, SamplingInput{&greedy, {}, {}});
  auto start = Clock::now();
  at::Tensor logits = model.Forward(step, cache).cpu();  // Waits for the device.
  const double prefill = Seconds(start);
  double decode = 0;
  for (int64_t t = 0; t <= o.steps; ++t) {
    step.token_ids.clear();
    for (const TokenChoice& c : SampleTokens(logits, inputs, {})) {
      step.token_ids.push_back(c.token);
    }
    for (SequenceChunk& s : step.sequences) {
      s.context_len += s.num_tokens;
      s.num_tokens = 1;
    }
    start = Clock::now();
    logits = model.Forward(step, cache).cpu();
    if (t > 0) decode += Seconds(start);  // Step 0 warms the decode path up.
  }
  const LlamaConfig& c = model.config();
  const at::ScalarType dtype = model.options().dtype;
  const double prompt = o.prompt, steps = o.steps;
  // Decode: every step reads all weights once and each sequence's KV cache.
  const double decode_bytes = steps * WeightBytesPerStep(c, dtype) +
                              batch * KvBytes(c, steps * (prompt + 1 + steps / 2), dtype);
  const double decode_flops = batch * steps * FlopsPerToken(c) +
                              batch * steps * AttentionFlops(c, prompt + 1 + steps / 2, 1);
  const double prefill_flops = batch * (prompt * FlopsPerToken(c) +
                                        AttentionFlops(c, 0, prompt));
  return {{"batch", batch},
          {"prefill_tokens_per_s", batch * prompt / prefill},
          {"prefill_tflop_s", prefill_flops / prefill / 1e12},
          {"decode_tokens_per_s", batch * steps / decode},
          {"decode_step_ms", 1000 * decode / steps},
          {"decode_gb_s", decode_bytes / decode / 1e9},
          {"decode_tflop_s", decode_flops / decode / 1e12}};
}

bool ParseArgs(int argc, char** argv, BenchOptions* o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") o->model = value;
    else if (flag == "--random") o->random = value;
    else if (flag == "--layers") o->layers = std::stoll(value);
    else if (flag == "--device") o->device = value;
    else if (flag == "--dtype") o->dtype = value;
    else if (flag == "--threads") o->threads = std::stoi(value);
    else if (flag == "--prompt") o->prompt = std::stoll(value);
    else if (flag == "--steps") o->steps = std::stoll(value);
    else if (flag == "--eager_baseline") o->eager_baseline = value == "1" || value == "true";
    else if (flag == "--adapters") o->adapters = absl::StrSplit(value, ',', absl::SkipEmpty());
    else if (flag == "--batches") {
      o->batches.clear();
      for (absl::string_view b : absl::StrSplit(value, ',')) {
        int64_t n = 0;
        if (!absl::SimpleAtoi(b, &n)) return false;
        o->batches.push_back(n);
      }
    } else {
      return false;
    }
  }
  return o->model.empty() != o->random.empty() &&
         (o->random.empty() || o->random == "llama2-7b") &&
         (o->device == "cpu" || o->device == "cuda");
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadModel(const BenchOptions& o,
                                                      const LlamaOptions& options) {
  if (o.random.empty()) return LlamaModel::Load(o.model, options);
  LlamaConfig config = Llama2_7bConfig();
  if (o.layers > 0) config.num_layers = o.layers;
  return LlamaModel::Load(config, RandomWeights(options.device, /*seed=*/7), options);
}

int Run(int argc, char** argv) {
  BenchOptions o;
  if (!ParseArgs(argc, argv, &o)) {
    std::cerr << "usage: model_bench (--model DIR | --random llama2-7b) [--device cpu|cuda] "
                 "[--dtype float32|bfloat16] [--threads N] [--batches 1,8,32] [--prompt N] "
                 "[--steps N]\n";
    return 2;
  }
  TuneMallocForModel();
  ConfigureTorchThreads({.intra_op_threads = o.threads});
  c10::InferenceMode inference;
  const at::ScalarType dtype = o.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  const at::Device device = o.device == "cuda" ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  auto model = LoadModel(o, {.dtype = dtype, .device = device,
                             .eager_baseline = o.eager_baseline});
  if (!model.ok()) {
    std::cerr << model.status().message() << "\n";
    return 1;
  }
  const double bandwidth = ReadBandwidth(device);
  const double bytes = WeightBytesPerStep((*model)->config(), dtype);
  std::cout << nlohmann::json{{"dtype", o.dtype},
                              {"device", o.device},
                              {"model", o.random.empty() ? o.model : o.random},
                              {"threads", at::get_num_threads()},
                              {"read_bandwidth_gb_s", bandwidth / 1e9},
                              {"weight_bytes_per_step", bytes},
                              {"roofline_batch1_tokens_per_s", bandwidth / bytes}}
                   .dump()
            << std::endl;
  std::vector<std::shared_ptr<const Adapter>> adapters;
  for (const std::string& dir : o.adapters) {
    const auto start = Clock::now();
    auto adapter = (*model)->LoadAdapter(dir, dir);
    if (!adapter.ok()) {
      std::cerr << adapter.status().message() << "\n";
      return 1;
    }
    std::cout << nlohmann::json{{"adapter", dir}, {"load_ms", 1000 * Seconds(start)},
                                {"bytes", (*adapter)->bytes}}.dump()
              << std::endl;
    adapters.push_back(*std::move(adapter));
  }
  for (int64_t batch : o.batches) {
    nlohmann::json row = RunBatch(**model, o, batch, adapters);
    row["adapters"] = adapters.size();
    row["dtype"] = o.dtype;
    std::cout << row.dump() << std::endl;
  }
  return 0;
}

}  // namespace
}  // namespace fms

int main(int argc, char** argv) { return fms::Run(argc, argv); }
