// Fuzzes config.json and generation_config.json parsing (model/llama_config.h).
// Input: config.json text, optionally followed by a NUL byte and
// generation_config.json text. Oracle: every accepted config is one the model
// code can be sized from without overflow or division by zero.

#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>

#include "model/llama_config.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view config = input.substr(0, nul);
  const std::string_view generation =
      nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  auto parsed = fms::ParseLlamaConfig(config, generation);
  if (!parsed.ok()) {
    FUZZ_CHECK(!parsed.status().message().empty(), "an error without a message");
    return 0;
  }
  const fms::LlamaConfig& c = *parsed;
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  for (int64_t size : {c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads,
                       c.num_kv_heads, c.head_dim, c.vocab_size, c.max_position_embeddings}) {
    FUZZ_CHECK(size > 0 && size <= kInt32Max, "a size outside [1, 2^31)");
  }
  FUZZ_CHECK(c.num_heads % c.num_kv_heads == 0, "kv heads do not divide heads");
  FUZZ_CHECK(c.head_dim % 2 == 0, "odd head_dim (RoPE pairs)");
  // The widest product the model and the KV pool compute.
  __int128 q_width = static_cast<__int128>(c.num_heads) * c.head_dim;
  FUZZ_CHECK(q_width <= kInt32Max, "num_heads * head_dim overflows");
  for (double value : {c.rms_norm_eps, c.rope_theta, c.rope_scaling.factor,
                       c.rope_scaling.low_freq_factor, c.rope_scaling.high_freq_factor}) {
    FUZZ_CHECK(std::isfinite(value) && value > 0, "a non-finite or non-positive float");
  }
  for (int32_t id : c.eos_token_ids) {
    FUZZ_CHECK(id >= 0 && id < c.vocab_size, "an EOS id outside the vocabulary");
  }
  FUZZ_CHECK(c.bos_token_id >= -1 && c.bos_token_id < c.vocab_size, "a BOS id outside");
  return 0;
}
