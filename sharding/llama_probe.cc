// llama_probe: runs LlamaModel on batches described by a JSON request on
// stdin, for the parity tests against Hugging Face transformers and between
// tensor-parallel splits.
//
//   {"model": DIR, "dtype": "float32" | "bfloat16", "threads": 2,
//    "block_size": 16, "num_blocks": 256, "out": FILE,
//    "rank": 0, "world_size": 1, "master_port": 29500, "device": "cpu" | "cuda",
//    "steps": [{"sequences": [{"tokens": [...], "context_len": 0,
//                              "blocks": [...], "all_logits": false}]}],
//    "generate": {"prompts": [[...], ...], "max_new_tokens": 64}}
//
// "steps": each step's fp32 logits are appended to FILE (raw, row-major);
// stdout gets {"rows": [rows per step], "vocab": V}. With "world_size" > 1
// one probe runs per rank (the same request but "rank"), joined over
// localhost:"master_port"; rank 0 writes the logits, the others nothing.
// "generate": decoding of all prompts batched together (one prefill step,
// then one decode step per token), greedy unless "params" gives per-prompt
// sampling parameters {"temperature", "top_k", "top_p", "typical_p", "seed",
// "repetition_penalty"}; stdout gets {"tokens": [[...]]}. One rank only: over
// several, generation needs the server (the plan carries each sampled token).

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include "model/llama_model.h"
#include "model/malloc_tuning.h"
#include "model/sampling.h"
#include "model/torch_threads.h"
#include "nlohmann/json.hpp"
#include "sharding/process_group.h"

namespace fms {
namespace {

using json = nlohmann::json;

ForwardBatch ParseStep(const json& step) {
  ForwardBatch batch;
  for (const json& s : step["sequences"]) {
    SequenceChunk chunk;
    const auto tokens = s["tokens"].get<std::vector<int32_t>>();
    chunk.num_tokens = static_cast<int64_t>(tokens.size());
    chunk.context_len = s.value("context_len", 0);
    chunk.block_table = s["blocks"].get<std::vector<int32_t>>();
    chunk.all_logits = s.value("all_logits", false);
    batch.token_ids.insert(batch.token_ids.end(), tokens.begin(), tokens.end());
    batch.sequences.push_back(std::move(chunk));
  }
  return batch;
}

json RunSteps(const LlamaModel& model, KvCache& cache, const json& request) {
  std::ofstream out(request["out"].get<std::string>(), std::ios::binary);
  json rows = json::array();
  for (const json& step : request["steps"]) {
    at::Tensor logits = model.Forward(ParseStep(step), cache);
    if (!logits.defined()) continue;  // Not rank 0.
    logits = logits.cpu().contiguous();
    out.write(static_cast<const char*>(logits.data_ptr()), logits.nbytes());
    rows.push_back(logits.size(0));
  }
  return {{"rows", rows}, {"vocab", model.config().vocab_size}};
}

std::vector<SamplingParams> ParseParams(const json& generate, size_t n) {
  std::vector<SamplingParams> params(n);
  if (!generate.contains("params")) return params;
  for (size_t i = 0; i < n; ++i) {
    const json& p = generate["params"][i];
    params[i].sample = true;
    params[i].temperature = p.value("temperature", 1.0f);
    params[i].top_k = p.value("top_k", 0);
    params[i].top_p = p.value("top_p", 1.0f);
    params[i].typical_p = p.value("typical_p", 0.0f);
    params[i].seed = p.value("seed", 0ULL);
    params[i].repetition_penalty = p.value("repetition_penalty", 1.0f);
  }
  return params;
}

std::vector<int32_t> NextTokens(const at::Tensor& logits,
                                const std::vector<SamplingParams>& params,
                                const std::vector<std::vector<int32_t>>& prompts,
                                const std::vector<std::vector<int32_t>>& generated) {
  std::vector<SamplingInput> inputs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    inputs.push_back({&params[i], prompts[i], generated[i]});
  }
  std::vector<int32_t> tokens;
  for (const TokenChoice& c : SampleTokens(logits, inputs, {})) tokens.push_back(c.token);
  return tokens;
}

json Generate(const LlamaModel& model, KvCache& cache, const json& request) {
  const auto prompts =
      request["generate"]["prompts"].get<std::vector<std::vector<int32_t>>>();
  const auto params = ParseParams(request["generate"], prompts.size());
  const int64_t max_new = request["generate"]["max_new_tokens"];
  const int64_t block_size = cache.block_size();
  std::vector<std::vector<int32_t>> generated(prompts.size());
  ForwardBatch batch;
  int32_t next_block = 0;
  for (const auto& prompt : prompts) {
    SequenceChunk s;
    s.num_tokens = static_cast<int64_t>(prompt.size());
    const int64_t blocks =
        (s.num_tokens + max_new + block_size - 1) / block_size;
    for (int64_t b = 0; b < blocks; ++b) s.block_table.push_back(next_block++);
    batch.token_ids.insert(batch.token_ids.end(), prompt.begin(), prompt.end());
    batch.sequences.push_back(std::move(s));
  }
  for (int64_t step = 0; step < max_new; ++step) {
    const std::vector<int32_t> next =
        NextTokens(model.Forward(batch, cache).cpu(), params, prompts, generated);
    batch.token_ids.clear();
    for (size_t i = 0; i < prompts.size(); ++i) {
      const int32_t token = next[i];
      generated[i].push_back(token);
      batch.token_ids.push_back(token);
      SequenceChunk& s = batch.sequences[i];
      s.context_len += s.num_tokens;
      s.num_tokens = 1;
    }
  }
  return {{"tokens", generated}};
}

int Run() {
  TuneMallocForModel();
  const json request = json::parse(std::cin);
  ConfigureTorchThreads({.intra_op_threads = request.value("threads", 2)});
  const std::string dtype = request.value("dtype", "float32");
  LlamaOptions options;
  options.dtype = dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  options.eager_baseline = request.value("eager_baseline", false);
  if (request.value("device", "cpu") == "cuda") options.device = at::Device(at::kCUDA, 0);
  std::unique_ptr<Collectives> group;
  if (const int world = request.value("world_size", 1); world > 1) {
    if (request.contains("generate")) {
      std::cerr << "generate needs one rank\n";
      return 1;
    }
    auto joined = JoinProcessGroup({.rank = request.value("rank", 0), .world_size = world,
                                    .master_port = request.value("master_port", 29500)});
    if (!joined.ok()) {
      std::cerr << joined.status().message() << "\n";
      return 1;
    }
    group = *std::move(joined);
    options.collectives = group.get();
  }
  auto model = LlamaModel::Load(request["model"], options);
  if (!model.ok()) {
    std::cerr << model.status().message() << "\n";
    return 1;
  }
  KvCache cache = (*model)->MakeCache({.num_blocks = request.value("num_blocks", 256),
                                       .block_size = request.value("block_size", 16)});
  c10::InferenceMode inference;
  const json result = request.contains("generate")
                          ? Generate(**model, cache, request)
                          : RunSteps(**model, cache, request);
  std::cout << result.dump() << "\n";
  return 0;
}

}  // namespace
}  // namespace fms

int main() { return fms::Run(); }
