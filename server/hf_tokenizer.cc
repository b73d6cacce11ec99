#include "server/hf_tokenizer.h"

#include <filesystem>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/hf_tokenizer_abi.h"

namespace fms {
namespace {

constexpr size_t kErrorSize = 1024;

// tokenizer_config.json's `eos_token`: a string or {"content": ...}; empty
// when the file or the key is absent or unreadable.
std::string ConfiguredEosToken(const std::filesystem::path& config_path) {
  std::ifstream in(config_path);
  if (!in) return "";
  const auto config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains("eos_token")) return "";
  const auto& eos = config["eos_token"];
  if (eos.is_string()) return eos.get<std::string>();
  if (eos.is_object() && eos.contains("content") && eos["content"].is_string()) {
    return eos["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(const std::string& json_path) {
  char error[kErrorSize] = {0};
  FmsHfTokenizer* handle = fms_hf_load(json_path.c_str(), error, sizeof(error));
  if (handle == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load ", json_path, ": ", error));
  }
  std::unique_ptr<HfTokenizer> tokenizer(new HfTokenizer(handle));
  tokenizer->vocab_size_ = fms_hf_vocab_size(handle);
  // The BOS is the token that encoding with special tokens puts in front.
  auto with = tokenizer->Encode("A", true);
  auto without = tokenizer->Encode("A", false);
  if (!with.ok()) return with.status();
  if (!without.ok()) return without.status();
  if (with->ids.size() > without->ids.size() && !with->ids.empty() &&
      tokenizer->IsSpecial(with->ids.front())) {
    tokenizer->bos_id_ = with->ids.front();
  }
  const std::string eos =
      ConfiguredEosToken(std::filesystem::path(json_path).parent_path() / "tokenizer_config.json");
  if (!eos.empty()) tokenizer->eos_id_ = fms_hf_token_to_id(handle, eos.data(), eos.size());
  return tokenizer;
}

HfTokenizer::HfTokenizer(FmsHfTokenizer* handle) : handle_(handle) {}

HfTokenizer::~HfTokenizer() { fms_hf_free(handle_); }

absl::StatusOr<Encoding> HfTokenizer::Encode(std::string_view text,
                                             bool add_special_tokens) const {
  char error[kErrorSize] = {0};
  FmsHfEncoding* result = fms_hf_encode(handle_, text.data(), text.size(), add_special_tokens,
                                        error, sizeof(error));
  if (result == nullptr) return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", error));
  const size_t n = fms_hf_encoding_len(result);
  const int32_t* ids = fms_hf_encoding_ids(result);
  const uint32_t* begins = fms_hf_encoding_begins(result);
  const uint32_t* ends = fms_hf_encoding_ends(result);
  Encoding encoding{.ids = {ids, ids + n}, .begins = {begins, begins + n},
                    .ends = {ends, ends + n}};
  fms_hf_encoding_free(result);
  return encoding;
}

absl::StatusOr<std::string> HfTokenizer::Decode(std::span<const int32_t> ids,
                                                bool skip_special_tokens) const {
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) return absl::InvalidArgumentError("token id out of vocabulary");
  }
  char error[kErrorSize] = {0};
  size_t len = 0;
  char* text = fms_hf_decode(handle_, ids.data(), ids.size(), skip_special_tokens, &len, error,
                             sizeof(error));
  if (text == nullptr) return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", error));
  std::string result(text, len);
  fms_hf_string_free(text, len);
  return result;
}

std::string_view HfTokenizer::IdToPiece(int32_t id) const {
  size_t len = 0;
  const char* token = fms_hf_token(handle_, id, &len);
  return token == nullptr ? std::string_view() : std::string_view(token, len);
}

bool HfTokenizer::IsSpecial(int32_t id) const { return fms_hf_is_special(handle_, id) != 0; }

}  // namespace fms
