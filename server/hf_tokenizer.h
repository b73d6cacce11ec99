// HfTokenizer: a Hugging Face tokenizer.json as a Tokenizer, through the
// `tokenizers` Rust crate (server/hf_tokenizer, C ABI in hf_tokenizer_abi.h),
// the library TGIS's router uses: ids, token strings and UTF-8 byte offsets
// are the crate's own. The BOS is whatever the tokenizer's post-processor
// adds; the EOS is tokenizer_config.json's `eos_token`, when the file exists.

#ifndef FMS_SERVER_HF_TOKENIZER_H_
#define FMS_SERVER_HF_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/tokenizer.h"

struct FmsHfTokenizer;

namespace fms {

class HfTokenizer final : public Tokenizer {
 public:
  // Loads `json_path`; reads tokenizer_config.json beside it if present.
  // The error names the file and carries the library's message.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Load(const std::string& json_path);

  HfTokenizer(const HfTokenizer&) = delete;
  HfTokenizer& operator=(const HfTokenizer&) = delete;
  ~HfTokenizer() override;

  absl::StatusOr<Encoding> Encode(std::string_view text, bool add_special_tokens) const override;
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids,
                                     bool skip_special_tokens) const override;
  std::string_view IdToPiece(int32_t id) const override;
  bool IsSpecial(int32_t id) const override;

  int32_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }

 private:
  explicit HfTokenizer(FmsHfTokenizer* handle);

  FmsHfTokenizer* handle_;  // Owned.
  int32_t vocab_size_ = 0;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
};

}  // namespace fms

#endif  // FMS_SERVER_HF_TOKENIZER_H_
