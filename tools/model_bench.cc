// model_bench: prefill and decode throughput of LlamaModel on this machine,
// with a STREAM-style read-bandwidth figure and the decode roofline it
// implies. Not a test: tools/bench_model.py runs it and writes the table.
//
//   model_bench --model DIR [--dtype float32|bfloat16] [--threads 2]
//               [--batches 1,8,32] [--prompt 128] [--steps 16]
//
// Prints one JSON object per line.

#include <ATen/Parallel.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "model/llama_model.h"
#include "model/malloc_tuning.h"
#include "model/sampling.h"
#include "model/torch_threads.h"
#include "nlohmann/json.hpp"

namespace fms {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string model;
  std::string dtype = "float32";
  int threads = 2;
  std::vector<int64_t> batches = {1, 8, 32};
  int64_t prompt = 128;  // Prompt tokens per sequence.
  int64_t steps = 16;    // Timed decode steps.
  bool eager_baseline = false;  // Unfused projections, per-sequence attention.
};

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Bytes per second of a parallel sum over a buffer far larger than the caches.
double ReadBandwidth() {
  const at::Tensor buffer = at::ones({int64_t{1} << 28}, at::kFloat);  // 1 GiB
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

nlohmann::json RunBatch(const LlamaModel& model, const BenchOptions& o, int64_t batch) {
  const int64_t block_size = 16;
  const int64_t blocks_per_seq = (o.prompt + o.steps + 1 + block_size - 1) / block_size;
  KvCache cache = model.MakeCache({.num_blocks = batch * blocks_per_seq,
                                   .block_size = block_size});
  ForwardBatch step;
  for (int64_t b = 0; b < batch; ++b) {
    SequenceChunk s;
    s.num_tokens = o.prompt;
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
  at::Tensor logits = model.Forward(step, cache);
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
    logits = model.Forward(step, cache);
    if (t > 0) decode += Seconds(start);  // Step 0 warms the decode path up.
  }
  return {{"batch", batch},
          {"prefill_tokens_per_s", batch * o.prompt / prefill},
          {"decode_tokens_per_s", batch * o.steps / decode},
          {"decode_step_ms", 1000 * decode / o.steps}};
}

bool ParseArgs(int argc, char** argv, BenchOptions* o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") o->model = value;
    else if (flag == "--dtype") o->dtype = value;
    else if (flag == "--threads") o->threads = std::stoi(value);
    else if (flag == "--prompt") o->prompt = std::stoll(value);
    else if (flag == "--steps") o->steps = std::stoll(value);
    else if (flag == "--eager_baseline") o->eager_baseline = value == "1" || value == "true";
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
  return !o->model.empty();
}

int Run(int argc, char** argv) {
  BenchOptions o;
  if (!ParseArgs(argc, argv, &o)) {
    std::cerr << "usage: model_bench --model DIR [--dtype float32|bfloat16] "
                 "[--threads N] [--batches 1,8,32] [--prompt N] [--steps N]\n";
    return 2;
  }
  TuneMallocForModel();
  ConfigureTorchThreads({.intra_op_threads = o.threads});
  c10::InferenceMode inference;
  const at::ScalarType dtype = o.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  auto model = LlamaModel::Load(o.model, {.dtype = dtype, .eager_baseline = o.eager_baseline});
  if (!model.ok()) {
    std::cerr << model.status().message() << "\n";
    return 1;
  }
  const double bandwidth = ReadBandwidth();
  const double bytes = WeightBytesPerStep((*model)->config(), dtype);
  std::cout << nlohmann::json{{"dtype", o.dtype},
                              {"threads", at::get_num_threads()},
                              {"read_bandwidth_gb_s", bandwidth / 1e9},
                              {"weight_bytes_per_step", bytes},
                              {"roofline_batch1_tokens_per_s", bandwidth / bytes}}
                   .dump()
            << std::endl;
  for (int64_t batch : o.batches) {
    nlohmann::json row = RunBatch(**model, o, batch);
    row["dtype"] = o.dtype;
    std::cout << row.dump() << std::endl;
  }
  return 0;
}

}  // namespace
}  // namespace fms

int main(int argc, char** argv) { return fms::Run(argc, argv); }
