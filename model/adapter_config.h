// What an adapter directory holds, from its adapter_config.json (PEFT) or,
// for TGIS's prompt-tuning format, its decoder.pt: the kind and the
// hyper-parameters a server checks before loading any tensor. Torch-free: the
// front end reads it to refuse an adapter early; the workers read it to load.
// Errors name the file and the field.

#ifndef FMS_MODEL_ADAPTER_CONFIG_H_
#define FMS_MODEL_ADAPTER_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace fms {

enum class AdapterKind {
  kLora,          // PEFT LORA: unmerged B·A on the projections.
  kPromptTuning,  // PEFT PROMPT_TUNING or TGIS decoder.pt: virtual tokens.
  kUnsupported,   // Any other peft_type (callers refuse it by name).
};

struct AdapterConfig {
  AdapterKind kind = AdapterKind::kLora;
  // "LORA", "PROMPT_TUNING", or "TGIS_DECODER_PT" for a decoder.pt prefix.
  std::string peft_type;
  // LoRA.
  // Which projections it targets is read from its tensors (adapter.h).
  int64_t rank = 0;           // r
  double lora_alpha = 0;      // Scale: lora_alpha / r, or / sqrt(r) with rsLoRA.
  bool use_rslora = false;
  // Prompt tuning: the virtual tokens, as the config says (checked against
  // the tensor when it is loaded); 0 for decoder.pt until then.
  int64_t num_virtual_tokens = 0;

  // The factor applied to B·A·x.
  double LoraScale() const;
};

// Parses adapter_config.json text. LoRA options this server does not
// implement (DoRA, per-module ranks, trained biases, extra saved modules)
// fail with INVALID_ARGUMENT naming the field.
absl::StatusOr<AdapterConfig> ParseAdapterConfig(std::string_view json);

// Reads the adapter in `dir`: adapter_config.json, or a bare decoder.pt
// (TGIS's prompt-tuning format). NOT_FOUND when neither exists.
absl::StatusOr<AdapterConfig> ReadAdapterConfig(const std::string& dir);

}  // namespace fms

#endif  // FMS_MODEL_ADAPTER_CONFIG_H_
