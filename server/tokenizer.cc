#include "server/tokenizer.h"

#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/hf_tokenizer.h"
#include "server/spm_tokenizer.h"

namespace fms {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::path dir = fs::absolute(model_dir, error);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer;
  fs::path file;
  if (fs::is_regular_file(dir / "tokenizer.json", error)) {
    file = dir / "tokenizer.json";
    auto hf = HfTokenizer::Load(file.string());
    if (!hf.ok()) return hf.status();
    tokenizer = std::unique_ptr<Tokenizer>(*std::move(hf));
  } else if (fs::is_regular_file(dir / "tokenizer.model", error)) {
    file = dir / "tokenizer.model";
    auto spm = SpmTokenizer::Load(file.string());
    if (!spm.ok()) return spm.status();
    tokenizer = std::unique_ptr<Tokenizer>(*std::move(spm));
  } else {
    return absl::NotFoundError(absl::StrCat(
        model_dir, ": no tokenizer.json or tokenizer.model in the model directory"));
  }
  // A tokenizer that knows no token would turn every prompt into nothing.
  if ((*tokenizer)->vocab_size() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": empty vocabulary"));
  }
  return tokenizer;
}

absl::StatusOr<PromptEncoding> EncodePrompt(const Tokenizer& tokenizer, std::string_view text,
                                            uint32_t truncate, bool add_special_tokens) {
  auto encoding = tokenizer.Encode(text, add_special_tokens);
  if (!encoding.ok()) return encoding.status();
  PromptEncoding prompt{.encoding = *std::move(encoding)};
  const size_t n = prompt.encoding.ids.size();
  if (truncate > 0 && n > truncate) {
    const auto first = static_cast<std::ptrdiff_t>(n - truncate);
    const auto keep_last = [first](auto& v) { v.erase(v.begin(), v.begin() + first); };
    keep_last(prompt.encoding.ids);
    keep_last(prompt.encoding.begins);
    keep_last(prompt.encoding.ends);
    prompt.truncated = true;
  }
  return prompt;
}

}  // namespace fms
