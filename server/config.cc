#include "server/config.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fms {
namespace {

using Setter = std::function<absl::Status(const std::string&, ServerConfig*)>;

struct Option {
  std::string flag;  // Without the leading "--".
  std::string env;
  std::string help;
  bool is_bool = false;  // A bare --flag means true.
  Setter set;
};

absl::Status BadValue(const std::string& value, const char* expected) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid value '", value, "': expected ", expected));
}

Setter Uint(uint32_t ServerConfig::*field, uint32_t min, uint32_t max) {
  return [=](const std::string& value, ServerConfig* config) {
    uint32_t parsed = 0;
    if (!absl::SimpleAtoi(value, &parsed) || parsed < min || parsed > max) {
      return BadValue(value, absl::StrFormat("an integer in [%d, %d]", min, max)
                                 .c_str());
    }
    config->*field = parsed;
    return absl::OkStatus();
  };
}

Setter Bytes(uint64_t ServerConfig::*field, uint64_t min) {
  return [=](const std::string& value, ServerConfig* config) {
    uint64_t parsed = 0;
    if (!absl::SimpleAtoi(value, &parsed) || parsed < min) {
      return BadValue(value, absl::StrCat("a byte count >= ", min).c_str());
    }
    config->*field = parsed;
    return absl::OkStatus();
  };
}

Setter Ratio(double ServerConfig::*field) {
  return [=](const std::string& value, ServerConfig* config) {
    double parsed = 0;
    if (!absl::SimpleAtod(value, &parsed) || !(parsed >= 0) || parsed > 1000) {
      return BadValue(value, "a number in [0, 1000]");
    }
    config->*field = parsed;
    return absl::OkStatus();
  };
}

Setter Bool(bool ServerConfig::*field) {
  return [=](const std::string& value, ServerConfig* config) {
    const std::string lower = absl::AsciiStrToLower(value);
    if (lower == "true" || lower == "1") {
      config->*field = true;
    } else if (lower == "false" || lower == "0") {
      config->*field = false;
    } else {
      return BadValue(value, "true or false");
    }
    return absl::OkStatus();
  };
}

Setter String(std::string ServerConfig::*field) {
  return [=](const std::string& value, ServerConfig* config) {
    config->*field = value;
    return absl::OkStatus();
  };
}

Setter OneOf(std::string ServerConfig::*field, std::vector<std::string> allowed,
             const char* expected) {
  return [=](const std::string& value, ServerConfig* config) {
    for (const auto& candidate : allowed) {
      if (value == candidate) {
        config->*field = value;
        return absl::OkStatus();
      }
    }
    return BadValue(value, expected);
  };
}

Setter MaxSequenceLength() {
  return [](const std::string& value, ServerConfig* config) {
    uint32_t parsed = 0;
    if (!absl::SimpleAtoi(value, &parsed) || parsed < 2) {
      return BadValue(value, "an integer >= 2");
    }
    config->max_sequence_length = parsed;
    return absl::OkStatus();
  };
}

constexpr uint32_t kMaxU32 = std::numeric_limits<uint32_t>::max();

}  // namespace

uint32_t DeriveMaxBatchSize(int64_t pool_tokens, uint32_t max_sequence_length) {
  const int64_t fits = pool_tokens / std::max<int64_t>(max_sequence_length, 1);
  return static_cast<uint32_t>(std::clamp<int64_t>(fits, 1, kMaxDerivedBatchSize));
}

namespace {

const std::vector<Option>& Options() {
  static const auto* options = new std::vector<Option>{
      {"model-name", "MODEL_NAME", "Hugging Face model directory", false,
       String(&ServerConfig::model_name)},
      {"max-sequence-length", "MAX_SEQUENCE_LENGTH",
       "input + output tokens per sequence [default: from config.json]", false,
       MaxSequenceLength()},
      {"max-new-tokens", "MAX_NEW_TOKENS", "per-request cap [default: 1024]",
       false, Uint(&ServerConfig::max_new_tokens, 1, kMaxU32)},
      {"max-batch-size", "MAX_BATCH_SIZE",
       "sequences in the running batch [default: as many of MAX_SEQUENCE_LENGTH as the "
       "KV cache holds, 1 to 256]", false,
       Uint(&ServerConfig::max_batch_size, 1, kMaxU32)},
      {"max-concurrent-requests", "MAX_CONCURRENT_REQUESTS",
       "admitted inputs before RESOURCE_EXHAUSTED [default: 512]", false,
       Uint(&ServerConfig::max_concurrent_requests, 1, kMaxU32)},
      {"max-waiting-tokens", "MAX_WAITING_TOKENS",
       "decode steps a waiting request waits at most [default: 24]", false,
       Uint(&ServerConfig::max_waiting_tokens, 0, kMaxU32)},
      {"dtype-str", "DTYPE_STR",
       "float32, bfloat16 or float16 [default: float32 on CPU]", false,
       OneOf(&ServerConfig::dtype_str, {"float32", "bfloat16", "float16"},
             "float32, bfloat16 or float16")},
      {"num-shard", "NUM_SHARD",
       "tensor-parallel workers [default: NUM_GPUS, else the count of "
       "CUDA_VISIBLE_DEVICES or NVIDIA_VISIBLE_DEVICES, else 1]",
       false,
       Uint(&ServerConfig::num_shard, 1, 64)},
      {"master-addr", "MASTER_ADDR", "workers' rendezvous address [default: localhost]",
       false, String(&ServerConfig::master_addr)},
      {"master-port", "MASTER_PORT", "workers' rendezvous port [default: 29500]", false,
       Uint(&ServerConfig::master_port, 1, 65535)},
      {"shard-uds-path", "SHARD_UDS_PATH",
       "worker socket prefix, rank appended as -N [default: a folder under /tmp]", false,
       String(&ServerConfig::shard_uds_path)},
      {"grpc-port", "GRPC_PORT", "gRPC port [default: 8033]", false,
       Uint(&ServerConfig::grpc_port, 0, 65535)},
      {"port", "PORT", "HTTP /health and /metrics port [default: 3000]", false,
       Uint(&ServerConfig::port, 0, 65535)},
      {"tls-cert-path", "TLS_CERT_PATH", "server certificate (PEM)", false,
       String(&ServerConfig::tls_cert_path)},
      {"tls-key-path", "TLS_KEY_PATH", "server private key (PEM)", false,
       String(&ServerConfig::tls_key_path)},
      {"tls-client-ca-cert-path", "TLS_CLIENT_CA_CERT_PATH",
       "CA that client certificates must chain to (mTLS)", false,
       String(&ServerConfig::tls_client_ca_cert_path)},
      {"output-special-tokens", "OUTPUT_SPECIAL_TOKENS",
       "keep special tokens in output text [default: false]", true,
       Bool(&ServerConfig::output_special_tokens)},
      {"add-special-tokens", "ADD_SPECIAL_TOKENS",
       "let the tokenizer add BOS (and the like) to prompts [default: true]", true,
       Bool(&ServerConfig::add_special_tokens)},
      {"default-include-stop-seqs", "DEFAULT_INCLUDE_STOP_SEQS",
       "default of include_stop_sequence [default: true]", true,
       Bool(&ServerConfig::default_include_stop_seqs)},
      {"max-num-batched-tokens", "MAX_NUM_BATCHED_TOKENS",
       "tokens per engine step, prompt chunks and decodes (vLLM's flag) [default: 512]",
       false, Uint(&ServerConfig::max_num_batched_tokens, 1, kMaxU32)},
      {"mixed-step-ratio", "MIXED_STEP_RATIO",
       "while streams decode, a step with prompt tokens costs at most this many decode "
       "steps, learned from step times; 0 or 1: prompts take MAX_NUM_BATCHED_TOKENS "
       "[default: 0]",
       false, Ratio(&ServerConfig::mixed_step_ratio)},
      {"hold-burst-first-tokens", "HOLD_BURST_FIRST_TOKENS",
       "when more prompt work is ready than a step takes, the streams of the burst start "
       "together once it is computed [default: true]",
       true, Bool(&ServerConfig::hold_burst_first_tokens)},
      {"kv-cache-memory", "KV_CACHE_MEMORY",
       "bytes of KV cache per worker (vLLM's kv_cache_memory_bytes), at least one "
       "MAX_SEQUENCE_LENGTH sequence [default: 4 GiB]",
       false, Bytes(&ServerConfig::kv_cache_memory, 1)},
      {"enable-prefix-caching", "ENABLE_PREFIX_CACHING",
       "reuse the KV cache of prompt prefixes computed before (vLLM's flag) [default: true]",
       true, Bool(&ServerConfig::enable_prefix_caching)},
      {"json-output", "JSON_OUTPUT", "JSON logs [default: false]", true,
       Bool(&ServerConfig::json_output)},
      {"drain-grace-seconds", "DRAIN_GRACE_SECONDS",
       "after SIGTERM, seconds in-flight requests may still run [default: 30]", false,
       Uint(&ServerConfig::drain_grace_seconds, 0, 3600)},
      // Two names for one folder; ADAPTER_CACHE, applied later, wins.
      {"prefix-store-path", "PREFIX_STORE_PATH", "alias of --adapter-cache (TGIS)", false,
       String(&ServerConfig::adapter_cache)},
      {"adapter-cache", "ADAPTER_CACHE",
       "folder of adapters for adapter_id / prefix_id [default: none, refused]", false,
       String(&ServerConfig::adapter_cache)},
      {"max-loras", "MAX_LORAS", "adapters kept loaded at once [default: 8]", false,
       Uint(&ServerConfig::max_loras, 1, 4096)},
      {"max-lora-rank", "MAX_LORA_RANK", "largest LoRA rank served [default: 64]", false,
       Uint(&ServerConfig::max_lora_rank, 1, 4096)},
      {"prompt-cache-size-mb", "PROMPT_CACHE_SIZE_MB",
       "megabytes of loaded adapters kept at once [default: 512]", false,
       Uint(&ServerConfig::prompt_cache_size_mb, 1, kMaxU32)},
      {"max-prompt-prefix-length", "MAX_PROMPT_PREFIX_LENGTH",
       "most virtual tokens of a prompt-tuning adapter [default: half the max sequence "
       "length]", false, Uint(&ServerConfig::max_prompt_prefix_length, 1, kMaxU32)},
      {"log-level", "LOG_LEVEL", "trace, debug, info, warn, error [default: info]",
       false,
       OneOf(&ServerConfig::log_level,
             {"trace", "debug", "info", "warn", "error"},
             "trace, debug, info, warn or error")},
  };
  return *options;
}

const Option* FindFlag(const std::string& name) {
  for (const Option& option : Options()) {
    if (option.flag == name) return &option;
  }
  return nullptr;
}

absl::Status Apply(const Option& option, const std::string& value,
                   const std::string& source, ServerConfig* config) {
  absl::Status status = option.set(value, config);
  if (status.ok()) return status;
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": ", status.message()));
}

// TGIS's launcher: NUM_GPUS when NUM_SHARD is unset (they must agree when
// both are set); with neither, one shard per entry of CUDA_VISIBLE_DEVICES,
// else of NVIDIA_VISIBLE_DEVICES; else 1.
absl::Status ResolveNumShard(const EnvLookup& env, bool num_shard_given,
                             ServerConfig* config) {
  if (const std::optional<std::string> gpus = env("NUM_GPUS"); gpus.has_value()) {
    uint32_t parsed = 0;
    if (!absl::SimpleAtoi(*gpus, &parsed) || parsed < 1 || parsed > 64) {
      return absl::InvalidArgumentError(
          absl::StrCat("NUM_GPUS: invalid value '", *gpus, "': expected an integer in [1, 64]"));
    }
    if (num_shard_given && parsed != config->num_shard) {
      return absl::InvalidArgumentError(absl::StrCat(
          "NUM_GPUS and num_shard are set to different values (", parsed, " and ",
          config->num_shard, ")"));
    }
    config->num_shard = parsed;
    return absl::OkStatus();
  }
  if (num_shard_given) return absl::OkStatus();
  std::optional<std::string> devices = env("CUDA_VISIBLE_DEVICES");
  if (!devices.has_value()) devices = env("NVIDIA_VISIBLE_DEVICES");
  if (devices.has_value()) {
    config->num_shard =
        static_cast<uint32_t>(std::count(devices->begin(), devices->end(), ',') + 1);
  }
  return absl::OkStatus();
}

absl::Status Validate(const ServerConfig& config) {
  if (config.tls_cert_path.empty() != config.tls_key_path.empty()) {
    return absl::InvalidArgumentError(
        "TLS_CERT_PATH and TLS_KEY_PATH must be given together");
  }
  if (!config.tls_client_ca_cert_path.empty() && config.tls_cert_path.empty()) {
    return absl::InvalidArgumentError(
        "TLS_CLIENT_CA_CERT_PATH requires TLS_CERT_PATH and TLS_KEY_PATH");
  }
  return absl::OkStatus();
}

// Applies the command-line flags over `config`; sets *help on --help.
absl::Status ApplyFlags(const std::vector<std::string>& args,
                        ServerConfig* config, bool* help, bool* num_shard_given) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      *help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "'"));
    }
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? eq : eq - 2);
    const Option* option = FindFlag(name);
    if (option == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (option->is_bool) {
      value = "true";
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, " needs a value"));
    }
    absl::Status status = Apply(*option, value, "--" + name, config);
    if (!status.ok()) return status;
    if (option->env == "NUM_SHARD") *num_shard_given = true;
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<std::string> ProcessEnv(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

absl::StatusOr<ParsedCommandLine> ParseServerConfig(
    const std::vector<std::string>& args, const EnvLookup& env) {
  ParsedCommandLine parsed;
  bool num_shard_given = false;
  for (const Option& option : Options()) {
    const std::optional<std::string> value = env(option.env);
    if (!value.has_value()) continue;
    absl::Status status = Apply(option, *value, option.env, &parsed.config);
    if (!status.ok()) return status;
    if (option.env == "NUM_SHARD") num_shard_given = true;
  }
  absl::Status status = ApplyFlags(args, &parsed.config, &parsed.help, &num_shard_given);
  if (!status.ok()) return status;
  if (parsed.help) return parsed;
  status = ResolveNumShard(env, num_shard_given, &parsed.config);
  if (!status.ok()) return status;
  status = Validate(parsed.config);
  if (!status.ok()) return status;
  return parsed;
}

std::string ServerConfigHelp() {
  std::string help =
      "Usage: fms-server [--flag=value ...]\n"
      "TGIS-compatible gRPC text-generation server. Every flag also reads the\n"
      "environment variable named beside it; a flag wins over its variable.\n\n";
  for (const Option& option : Options()) {
    absl::StrAppendFormat(&help, "  --%s%s  [env: %s]\n      %s\n", option.flag,
                          option.is_bool ? "[=true|false]" : "=VALUE",
                          option.env, option.help);
  }
  absl::StrAppend(&help, "  --help, -h\n      this text\n");
  return help;
}

}  // namespace fms
