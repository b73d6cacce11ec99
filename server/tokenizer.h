// Tokenizer: a SentencePiece model (tokenizer.model) used by the front end for
// Tokenize, prompt encoding and incremental detokenization.
//
// SentencePiece itself lives in libfms_spm_shim.so, opened with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) so that its private protobuf 3.14 and its
// FLAGS_* symbols never meet gRPC's protobuf or LibTorch's libc10 (spm_shim.h).

#ifndef FMS_SERVER_TOKENIZER_H_
#define FMS_SERVER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fms {

struct TokenizerOptions {
  // Path of libfms_spm_shim.so; empty means FindSpmShim().
  std::string shim_path;
};

// Token ids of a text, with the UTF-8 byte range [begin, end) of the input
// that each token covers. No special tokens are added.
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<uint32_t> begins;
  std::vector<uint32_t> ends;
};

// Finds libfms_spm_shim.so: $FMS_SPM_SHIM, next to the executable, or in the
// executable's Bazel runfiles.
absl::StatusOr<std::string> FindSpmShim();

class Tokenizer {
 public:
  // Loads `model_path` (a SentencePiece tokenizer.model).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(
      const std::string& model_path, const TokenizerOptions& options = {});

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  ~Tokenizer();

  Encoding Encode(std::string_view text) const;
  // Fails on ids outside the vocabulary.
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const;
  // The raw vocabulary string, e.g. "▁Hello" or "<0x0A>".
  std::string_view IdToPiece(int32_t id) const;
  bool IsControl(int32_t id) const;
  bool IsByte(int32_t id) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when absent.
  int32_t eos_id() const;  // -1 when absent.

 // The shim's entry points (defined in tokenizer.cc).
  struct Api;

 private:
  Tokenizer(std::unique_ptr<Api> api, void* handle);

  std::unique_ptr<Api> api_;
  void* handle_;  // The shim's FmsSpm*, owned.
};

}  // namespace fms

#endif  // FMS_SERVER_TOKENIZER_H_
