// SpmTokenizer: a SentencePiece model (tokenizer.model) as a Tokenizer.
// Encode(text, true) puts the model's BOS first, as LLaMa 2's tokenizers do.
//
// SentencePiece itself lives in libfms_spm_shim.so, opened with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) so that its private protobuf 3.14 and its
// FLAGS_* symbols never meet gRPC's protobuf or LibTorch's libc10 (spm_shim.h).

#ifndef FMS_SERVER_SPM_TOKENIZER_H_
#define FMS_SERVER_SPM_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer.h"

namespace fms {

struct TokenizerOptions {
  // Path of libfms_spm_shim.so; empty means FindSpmShim().
  std::string shim_path;
};

// Finds libfms_spm_shim.so: $FMS_SPM_SHIM, next to the executable, or in the
// executable's Bazel runfiles.
absl::StatusOr<std::string> FindSpmShim();

class SpmTokenizer final : public Tokenizer {
 public:
  // Loads `model_path` (a SentencePiece tokenizer.model).
  static absl::StatusOr<std::unique_ptr<SpmTokenizer>> Load(
      const std::string& model_path, const TokenizerOptions& options = {});

  SpmTokenizer(const SpmTokenizer&) = delete;
  SpmTokenizer& operator=(const SpmTokenizer&) = delete;
  ~SpmTokenizer() override;

  absl::StatusOr<Encoding> Encode(std::string_view text, bool add_special_tokens) const override;
  // Without `skip_special_tokens`, control tokens appear as their pieces ("<s>").
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids,
                                     bool skip_special_tokens) const override;
  std::string_view IdToPiece(int32_t id) const override;
  bool IsSpecial(int32_t id) const override;  // A control symbol (<s>, </s>).
  bool IsByte(int32_t id) const;              // A byte-fallback piece (<0x0A>).

  int32_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;

  // The shim's entry points (defined in spm_tokenizer.cc).
  struct Api;

 private:
  SpmTokenizer(std::unique_ptr<Api> api, void* handle);
  // SentencePiece's decoding of ids without control tokens.
  absl::StatusOr<std::string> DecodePlain(std::span<const int32_t> ids) const;

  std::unique_ptr<Api> api_;
  void* handle_;  // The shim's FmsSpm*, owned.
};

}  // namespace fms

#endif  // FMS_SERVER_SPM_TOKENIZER_H_
