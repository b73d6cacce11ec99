// Tokenizer: what the front end needs of a model's tokenizer, for Tokenize,
// prompt encoding and detokenization. Two implementations:
//   * HfTokenizer (hf_tokenizer.h): a tokenizer.json through Hugging Face's
//     `tokenizers` crate, the library TGIS's router uses;
//   * SpmTokenizer (spm_tokenizer.h): a SentencePiece tokenizer.model.
// LoadTokenizer picks one for a model directory as TGIS does.
//
// Implementations are immutable after loading and safe to call from any
// thread.

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

// Token ids of a text, with the UTF-8 byte range [begin, end) of the input
// that each token covers. Tokens the tokenizer adds itself (BOS) cover the
// empty range (0, 0).
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<uint32_t> begins;
  std::vector<uint32_t> ends;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes UTF-8 `text`. With `add_special_tokens` the tokenizer adds what
  // its model expects (BOS for LLaMa 2 and 3; nothing for SmolLM2), as
  // TGIS's `encode(text, true)`.
  virtual absl::StatusOr<Encoding> Encode(std::string_view text,
                                          bool add_special_tokens) const = 0;
  // Decodes ids to text; special tokens are left out when
  // `skip_special_tokens`. Fails on ids outside the vocabulary.
  virtual absl::StatusOr<std::string> Decode(std::span<const int32_t> ids,
                                             bool skip_special_tokens) const = 0;
  // The raw vocabulary string, e.g. "Ġthe", "▁Hello" or "<0x0A>"; empty for
  // ids outside the vocabulary.
  virtual std::string_view IdToPiece(int32_t id) const = 0;
  // A special token (BOS, EOS, "<|im_start|>"): left out of decoded text
  // unless OUTPUT_SPECIAL_TOKENS.
  virtual bool IsSpecial(int32_t id) const = 0;

  // One more than the largest id.
  virtual int32_t vocab_size() const = 0;
  // The token Encode(text, true) puts first; -1 when it adds none.
  virtual int32_t bos_id() const = 0;
  // The tokenizer's own end-of-sequence token; -1 when it names none.
  virtual int32_t eos_id() const = 0;
};

// The tokenizer of a Hugging Face model directory, chosen as TGIS does:
// tokenizer.json when present, else tokenizer.model, else NOT_FOUND naming
// the directory.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// A prompt as the model sees it: Encode(text, add_special_tokens), then the
// last `truncate` tokens when 0 < truncate < length (TGIS truncation_side =
// "left"). TGIS always adds special tokens; ADD_SPECIAL_TOKENS=false turns
// that off, as in vLLM's TGIS adapter.
struct PromptEncoding {
  Encoding encoding;
  bool truncated = false;
};
absl::StatusOr<PromptEncoding> EncodePrompt(const Tokenizer& tokenizer, std::string_view text,
                                            uint32_t truncate, bool add_special_tokens = true);

}  // namespace fms

#endif  // FMS_SERVER_TOKENIZER_H_
