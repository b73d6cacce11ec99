// Server configuration with TGIS's launcher flag and environment names
// (shared/docs/tgis-api.md section 3.1): a flag wins over its environment
// variable, which wins over the default. Const after start-up.

#ifndef FMS_SERVER_CONFIG_H_
#define FMS_SERVER_CONFIG_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fms {

inline constexpr uint32_t kMaxDerivedBatchSize = 256;  // vLLM's max_num_seqs default.

// MAX_BATCH_SIZE's default: full-length sequences the pool holds, 1 to 256.
uint32_t DeriveMaxBatchSize(int64_t pool_tokens, uint32_t max_sequence_length);

struct ServerConfig {
  // MODEL_NAME: a Hugging Face model directory (nothing is downloaded).
  std::string model_name;
  // MAX_SEQUENCE_LENGTH: input + output tokens per sequence; unset means the
  // model's max_position_embeddings.
  std::optional<uint32_t> max_sequence_length;
  // MAX_NEW_TOKENS: per-request cap, clamped to max_sequence_length - 1.
  uint32_t max_new_tokens = 1024;
  // MAX_BATCH_SIZE: most sequences in the running batch. 0 (unset): as many
  // sequences of max_sequence_length as the workers' KV pools hold, from 1 to
  // kMaxDerivedBatchSize (TGIS's fixed default was 12).
  uint32_t max_batch_size = 0;
  // MAX_CONCURRENT_REQUESTS: admitted inputs (not RPCs); beyond, RESOURCE_EXHAUSTED.
  uint32_t max_concurrent_requests = 512;
  // MAX_WAITING_TOKENS: decode steps after which a waiting request is admitted.
  uint32_t max_waiting_tokens = 24;
  // DTYPE_STR: float32, bfloat16 or float16; empty means float32 on CPU.
  std::string dtype_str;
  // NUM_SHARD: tensor-parallel worker processes. Unset, it is NUM_GPUS, else
  // the count of CUDA_VISIBLE_DEVICES (or NVIDIA_VISIBLE_DEVICES) entries,
  // else 1, as TGIS's launcher decides; NUM_GPUS and NUM_SHARD must agree.
  uint32_t num_shard = 1;
  // MASTER_ADDR / MASTER_PORT: where the workers meet (rank 0 listens).
  std::string master_addr = "localhost";
  uint32_t master_port = 29500;
  // SHARD_UDS_PATH: worker r's Unix socket is <path>-<r>; empty means a
  // fresh folder under /tmp.
  std::string shard_uds_path;
  // GRPC_PORT: the fmaas.GenerationService port.
  uint32_t grpc_port = 8033;
  // PORT: HTTP /health and /metrics.
  uint32_t port = 3000;
  // TLS_CERT_PATH / TLS_KEY_PATH: both or neither; TLS_CLIENT_CA_CERT_PATH
  // (mTLS) only with them.
  std::string tls_cert_path;
  std::string tls_key_path;
  std::string tls_client_ca_cert_path;
  // OUTPUT_SPECIAL_TOKENS: keep special tokens when detokenizing.
  bool output_special_tokens = false;
  // ADD_SPECIAL_TOKENS (the vLLM TGIS adapter's variable; TGIS always adds
  // them): false leaves BOS out of encoded prompts, for chat templates whose
  // text already starts with it.
  bool add_special_tokens = true;
  // DEFAULT_INCLUDE_STOP_SEQS: default of include_stop_sequence.
  bool default_include_stop_seqs = true;
  // MAX_NUM_BATCHED_TOKENS (vLLM's --max-num-batched-tokens): tokens per
  // engine step, decodes and prompt chunks together.
  uint32_t max_num_batched_tokens = 512;
  // MIXED_STEP_RATIO: while streams decode, prompt chunks are cut so that a
  // step costs at most this many decode-only steps (batching/step_cost.h);
  // 0 or 1 (the default, as in TGIS and vLLM): no such cut. Off by default
  // since the cut halved throughput under load with distinct prompts
  // (docs/benchmarks.md, "MIXED_STEP_RATIO under load").
  double mixed_step_ratio = 0;
  // HOLD_BURST_FIRST_TOKENS: when more prompt work is ready than one step
  // takes, prompts wait at their last token until the rest fits in a step,
  // so a burst's streams start together instead of the first ones stalling
  // behind the later ones' chunks (batching/scheduler.h). Each waits at most
  // MAX_WAITING_TOKENS steps.
  bool hold_burst_first_tokens = true;
  // KV_CACHE_MEMORY (vLLM's kv_cache_memory_bytes): each worker's KV pool,
  // in bytes; the worker sizes its pool from it (model/kv_cache.h). 0: 4 GiB.
  // Never less than one sequence of max_sequence_length; on the CPU its pages
  // are committed as the cache fills, not at start.
  uint64_t kv_cache_memory = 0;
  // ENABLE_PREFIX_CACHING (vLLM's --enable-prefix-caching, on by default as
  // in vLLM V1; TGIS has none): full KV blocks of earlier prompts (same
  // adapter, same tokens from the start) are reused instead of recomputed.
  bool enable_prefix_caching = true;
  // JSON_OUTPUT: JSON log lines instead of text.
  bool json_output = false;
  // LOG_LEVEL: trace, debug, info, warn, error.
  std::string log_level = "info";
  // DRAIN_GRACE_SECONDS: after SIGTERM, how long in-flight requests may run.
  uint32_t drain_grace_seconds = 30;
  // ADAPTER_CACHE (vllm-tgis-adapter's --adapter-cache), or TGIS's
  // PREFIX_STORE_PATH: the folder whose sub-folders are the adapters that
  // adapter_id / prefix_id name; empty: adapters are refused.
  std::string adapter_cache;
  // MAX_LORAS: adapters kept loaded on the workers at once (least recently
  // used first out; one in use by a request is never unloaded).
  uint32_t max_loras = 8;
  // MAX_LORA_RANK (vLLM's --max-lora-rank): larger LoRA ranks are refused.
  uint32_t max_lora_rank = 64;
  // PROMPT_CACHE_SIZE_MB (TGIS): megabytes of loaded adapter tensors (rank
  // 0's) kept at once.
  uint32_t prompt_cache_size_mb = 512;
  // MAX_PROMPT_PREFIX_LENGTH (TGIS): most virtual tokens of a prompt-tuning
  // adapter; 0 means half of the max sequence length, as in TGIS.
  uint32_t max_prompt_prefix_length = 0;
};

// Reads an environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// The process environment.
std::optional<std::string> ProcessEnv(const std::string& name);

struct ParsedCommandLine {
  ServerConfig config;
  bool help = false;  // --help was given.
};

// Parses `args` (without the program name) over `env`. Unknown flags, bad
// values and inconsistent combinations fail with a message naming them.
absl::StatusOr<ParsedCommandLine> ParseServerConfig(
    const std::vector<std::string>& args, const EnvLookup& env);

// The --help text: every flag with its environment name and default.
std::string ServerConfigHelp();

}  // namespace fms

#endif  // FMS_SERVER_CONFIG_H_
