// TextStream: incremental detokenization of one sequence's generated tokens,
// with TGIS's stop sequences (shared/docs/tgis-api.md sections 1.5 and 1.7).
//
// The text of the generated tokens is decoded whole, after the last prompt
// token (so SentencePiece's leading-space rule applies as it would in the full
// text), and released as it becomes final: never half a UTF-8 character
// (a trailing U+FFFD from byte-fallback pieces is held back), and never text
// that a stop sequence may still cut. Stop sequences are matched on bytes, in
// request order; the text ends at the match (include_stop_sequence = false)
// or after it (true). EOS tokens never reach the text.

#ifndef FMS_SERVER_TEXT_STREAM_H_
#define FMS_SERVER_TEXT_STREAM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer.h"

namespace fms {

struct TextStreamOptions {
  std::vector<std::string> stop_sequences;
  bool include_stop_sequence = true;
  bool output_special_tokens = false;  // Keep control tokens other than EOS.
  std::vector<int32_t> eos_token_ids;
};

class TextStream {
 public:
  // `last_prompt_token` gives the first generated token its left context;
  // -1 when there is none.
  TextStream(const Tokenizer* tokenizer, int32_t last_prompt_token,
             TextStreamOptions options);

  struct Delta {
    std::string text;           // Newly final text; may be empty.
    bool stopped = false;       // A stop sequence matched: the text is complete.
    std::string stop_sequence;  // The one that matched.
  };

  // Appends a generated token.
  absl::StatusOr<Delta> Add(int32_t token);
  // The text held back so far (at the end of generation).
  std::string Flush();
  // Undoes a stop-sequence cut: the text after the cut, now released
  // (TGIS: a stop sequence completed on the step that also reaches
  // max_new_tokens reports MAX_TOKENS with the untruncated text).
  std::string Uncut();

  const std::string& text() const { return text_; }  // All released text.

 private:
  absl::StatusOr<std::string> DecodeGenerated() const;

  const Tokenizer* tokenizer_;
  int32_t last_prompt_token_;
  TextStreamOptions options_;
  std::vector<int32_t> tokens_;  // Generated, EOS and skipped specials removed.
  std::string decoded_;          // Current decoding of tokens_.
  std::string text_;             // Released.
  size_t hold_back_ = 0;         // Bytes a stop sequence may still need.
  bool stopped_ = false;
};

}  // namespace fms

#endif  // FMS_SERVER_TEXT_STREAM_H_
