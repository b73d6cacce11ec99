#include "model/adapter_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace fms {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("adapter_config.json: ", field, " ", why));
}

// A field that must be absent, null, false, empty or equal to `neutral`.
bool IsNeutral(const json& j, const char* field, const json& neutral) {
  if (!j.contains(field)) return true;
  const json& v = j.at(field);
  return v.is_null() || v == neutral || v == false || (v.is_object() && v.empty()) ||
         (v.is_array() && v.empty());
}

absl::Status ParseLora(const json& j, AdapterConfig& c) {
  if (!j.contains("r") || !j.at("r").is_number_integer() || j.at("r").get<int64_t>() < 1) {
    return Invalid("r", "must be a positive integer");
  }
  c.rank = j.at("r").get<int64_t>();
  c.lora_alpha = static_cast<double>(c.rank);  // PEFT's default alpha is 8 = its default r.
  if (j.contains("lora_alpha")) {
    if (!j.at("lora_alpha").is_number()) return Invalid("lora_alpha", "must be a number");
    c.lora_alpha = j.at("lora_alpha").get<double>();
  }
  if (j.contains("use_rslora") && j.at("use_rslora").is_boolean()) {
    c.use_rslora = j.at("use_rslora").get<bool>();
  }
  // What PEFT can save and this server does not apply: refused, not ignored.
  for (const char* field :
       {"use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform",
        "fan_in_fan_out", "lora_bias", "layer_replication", "trainable_token_indices",
        "alora_invocation_tokens", "target_parameters", "use_qalora", "use_bdlora"}) {
    if (!IsNeutral(j, field, json())) return Invalid(field, "is not supported");
  }
  if (!IsNeutral(j, "bias", "none")) return Invalid("bias", "must be \"none\"");
  return absl::OkStatus();
}

}  // namespace

double AdapterConfig::LoraScale() const {
  return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(rank))
                    : lora_alpha / static_cast<double>(rank);
}

absl::StatusOr<AdapterConfig> ParseAdapterConfig(std::string_view text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("adapter_config.json is not a JSON object");
  }
  if (!j.contains("peft_type") || !j.at("peft_type").is_string()) {
    return Invalid("peft_type", "is missing");
  }
  AdapterConfig c;
  c.peft_type = j.at("peft_type").get<std::string>();
  if (c.peft_type == "LORA") {
    c.kind = AdapterKind::kLora;
    if (absl::Status s = ParseLora(j, c); !s.ok()) return s;
  } else if (c.peft_type == "PROMPT_TUNING") {
    c.kind = AdapterKind::kPromptTuning;
    if (!j.contains("num_virtual_tokens") || !j.at("num_virtual_tokens").is_number_integer() ||
        j.at("num_virtual_tokens").get<int64_t>() < 1) {
      return Invalid("num_virtual_tokens", "must be a positive integer");
    }
    c.num_virtual_tokens = j.at("num_virtual_tokens").get<int64_t>();
  } else {
    c.kind = AdapterKind::kUnsupported;
  }
  return c;
}

absl::StatusOr<AdapterConfig> ReadAdapterConfig(const std::string& dir) {
  const std::filesystem::path root(dir);
  std::error_code error;
  if (std::filesystem::is_regular_file(root / "adapter_config.json", error)) {
    std::ifstream in(root / "adapter_config.json");
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return absl::InvalidArgumentError("adapter_config.json cannot be read");
    return ParseAdapterConfig(text.str());
  }
  if (std::filesystem::is_regular_file(root / "decoder.pt", error)) {
    return AdapterConfig{.kind = AdapterKind::kPromptTuning, .peft_type = "TGIS_DECODER_PT"};
  }
  return absl::NotFoundError("invalid adapter: no adapter_config.json found");
}

}  // namespace fms
