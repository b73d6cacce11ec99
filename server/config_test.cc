#include "server/config.h"

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fms {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name)
             -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ServerConfig, DefaultsAreTgisDefaults) {
  auto parsed = ParseServerConfig({}, FakeEnv({}));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const ServerConfig& config = parsed->config;
  EXPECT_EQ(config.grpc_port, 8033u);
  EXPECT_EQ(config.port, 3000u);
  EXPECT_EQ(config.max_new_tokens, 1024u);
  EXPECT_EQ(config.max_batch_size, 0u);  // Derived from the KV pool (TGIS: 12).
  EXPECT_TRUE(config.enable_prefix_caching);
  EXPECT_EQ(config.max_num_batched_tokens, 512u);
  EXPECT_EQ(config.mixed_step_ratio, 0.0);
  EXPECT_TRUE(config.hold_burst_first_tokens);
  EXPECT_EQ(config.kv_cache_memory, 0u);
  EXPECT_EQ(config.max_concurrent_requests, 512u);
  EXPECT_EQ(config.max_waiting_tokens, 24u);
  EXPECT_EQ(config.num_shard, 1u);
  EXPECT_EQ(config.master_addr, "localhost");
  EXPECT_EQ(config.master_port, 29500u);
  EXPECT_EQ(config.shard_uds_path, "");
  EXPECT_FALSE(config.max_sequence_length.has_value());
  EXPECT_TRUE(config.default_include_stop_seqs);
  EXPECT_FALSE(config.output_special_tokens);
  EXPECT_FALSE(parsed->help);
}

TEST(ServerConfig, TheDefaultBatchIsWhatThePoolHolds) {
  EXPECT_EQ(DeriveMaxBatchSize(11650 * 16, 8192), 22u);  // SmolLM2 bf16 in 4 GiB.
  EXPECT_EQ(DeriveMaxBatchSize(11650 * 16, 2048), 91u);
  EXPECT_EQ(DeriveMaxBatchSize(4096, 8192), 1u);          // Never 0.
  EXPECT_EQ(DeriveMaxBatchSize(int64_t{1} << 40, 512), 256u);
}

TEST(ServerConfig, FlagWinsOverEnvironmentWhichWinsOverDefault) {
  auto parsed = ParseServerConfig(
      {"--max-new-tokens=64", "--grpc-port", "9000"},
      FakeEnv({{"MAX_NEW_TOKENS", "32"}, {"MAX_BATCH_SIZE", "4"},
               {"MODEL_NAME", "/models/demo"}, {"MASTER_PORT", "29600"},
               {"SHARD_UDS_PATH", "/tmp/tgis"}}));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->config.max_new_tokens, 64u);
  EXPECT_EQ(parsed->config.grpc_port, 9000u);
  EXPECT_EQ(parsed->config.max_batch_size, 4u);
  EXPECT_EQ(parsed->config.model_name, "/models/demo");
  EXPECT_EQ(parsed->config.master_port, 29600u);
  EXPECT_EQ(parsed->config.shard_uds_path, "/tmp/tgis");
}

TEST(ServerConfig, BooleanFlagsTakeAnOptionalValue) {
  auto parsed = ParseServerConfig(
      {"--json-output", "--default-include-stop-seqs=false"},
      FakeEnv({{"OUTPUT_SPECIAL_TOKENS", "TRUE"}}));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->config.json_output);
  EXPECT_FALSE(parsed->config.default_include_stop_seqs);
  EXPECT_TRUE(parsed->config.output_special_tokens);
}

struct ErrorCase {
  std::vector<std::string> args;
  std::map<std::string, std::string> env;
  std::string message;
};

TEST(ServerConfig, ErrorsNameTheFlagOrVariable) {
  const std::vector<ErrorCase> cases = {
      {{"--no-such-flag=1"}, {}, "unknown flag --no-such-flag"},
      {{"--max-new-tokens=abc"}, {}, "--max-new-tokens: invalid value 'abc'"},
      {{"--max-new-tokens=0"}, {}, "--max-new-tokens: invalid value '0'"},
      {{}, {{"MAX_BATCH_SIZE", "-3"}}, "MAX_BATCH_SIZE: invalid value '-3'"},
      {{}, {{"MAX_SEQUENCE_LENGTH", "1"}}, "MAX_SEQUENCE_LENGTH: invalid value"},
      {{"--grpc-port=70000"}, {}, "--grpc-port: invalid value '70000'"},
      {{}, {{"MASTER_PORT", "0"}}, "MASTER_PORT: invalid value '0'"},
      {{"--dtype-str=int4"}, {}, "--dtype-str: invalid value 'int4'"},
      {{"--json-output=maybe"}, {}, "--json-output: invalid value 'maybe'"},
      {{"--max-batch-size"}, {}, "flag --max-batch-size needs a value"},
      {{"serve"}, {}, "unexpected argument 'serve'"},
      {{"--tls-cert-path=c.pem"}, {}, "TLS_CERT_PATH and TLS_KEY_PATH"},
      {{}, {{"TLS_CLIENT_CA_CERT_PATH", "ca.pem"}}, "TLS_CLIENT_CA_CERT_PATH"},
  };
  for (const ErrorCase& c : cases) {
    auto parsed = ParseServerConfig(c.args, FakeEnv(c.env));
    ASSERT_FALSE(parsed.ok()) << c.message;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(c.message), std::string::npos)
        << parsed.status().message();
  }
}

// TGIS's launcher (find_num_shards): NUM_SHARD, else NUM_GPUS, else one
// shard per visible device, else 1.
TEST(ServerConfig, ShardCountComesFromGpusOrVisibleDevicesWhenUnset) {
  struct Case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    uint32_t want;
  };
  const std::vector<Case> cases = {
      {{}, {{"NUM_GPUS", "4"}}, 4},
      {{}, {{"CUDA_VISIBLE_DEVICES", "0,1,2"}}, 3},
      {{}, {{"NVIDIA_VISIBLE_DEVICES", "2,3"}}, 2},
      {{}, {{"CUDA_VISIBLE_DEVICES", "1"}, {"NVIDIA_VISIBLE_DEVICES", "0,1,2,3"}}, 1},
      {{}, {{"NUM_GPUS", "2"}, {"CUDA_VISIBLE_DEVICES", "0,1,2,3"}}, 2},
      {{"--num-shard=2"}, {{"CUDA_VISIBLE_DEVICES", "0,1,2,3"}}, 2},
      {{}, {{"NUM_SHARD", "2"}, {"NUM_GPUS", "2"}}, 2},
      {{}, {}, 1},
  };
  for (const Case& c : cases) {
    auto parsed = ParseServerConfig(c.args, FakeEnv(c.env));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->config.num_shard, c.want) << c.want;
  }
  auto clash = ParseServerConfig({"--num-shard=2"}, FakeEnv({{"NUM_GPUS", "4"}}));
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.status().message(),
            "NUM_GPUS and num_shard are set to different values (4 and 2)");
  auto bad = ParseServerConfig({}, FakeEnv({{"NUM_GPUS", "many"}}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("NUM_GPUS: invalid value 'many'"), std::string::npos);
}

TEST(ServerConfig, HelpListsEveryFlagWithItsEnvironmentName) {
  auto parsed = ParseServerConfig({"--help"}, FakeEnv({}));
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->help);
  const std::string help = ServerConfigHelp();
  for (const char* name :
       {"--model-name", "MODEL_NAME", "--max-sequence-length", "--num-shard",
        "NUM_SHARD", "GRPC_PORT", "TLS_CLIENT_CA_CERT_PATH", "LOG_LEVEL",
        "DEFAULT_INCLUDE_STOP_SEQS", "MAX_WAITING_TOKENS", "DTYPE_STR", "MASTER_ADDR",
        "--master-port", "SHARD_UDS_PATH"}) {
    EXPECT_NE(help.find(name), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace fms
