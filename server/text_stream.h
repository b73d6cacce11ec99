// TextStream: incremental detokenization of one sequence's generated tokens,
// with TGIS's stop sequences (shared/docs/tgis-api.md sections 1.5 and 1.7).
//
// Decoding is incremental, with a prefix/read offset window over the token
// list (as vLLM's detokenizer and TGIS's decoder.rs): each new token decodes
// only the few tokens since the last complete character, so the cost per
// token does not grow with the sequence. The window starts on the last
// prompt tokens, so that the first generated token decodes as it does after
// the prompt (SentencePiece's leading space; a byte-level merge across the
// boundary). Text is released as it becomes final: never half a UTF-8
// character (the window waits while the decoding ends in U+FFFD), only whole
// grapheme clusters with the last one held until the next token (as TGIS's
// router does), and never text that a stop sequence may still cut. Stop sequences are matched on
// bytes, in request order; the text ends at the match
// (include_stop_sequence = false) or after it (true). EOS tokens never reach
// the text; other special tokens only with output_special_tokens.
//
// Not thread-safe: one thread at a time (the RPC thread of its request).

#ifndef FMS_SERVER_TEXT_STREAM_H_
#define FMS_SERVER_TEXT_STREAM_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer.h"

namespace fms {

struct TextStreamOptions {
  std::vector<std::string> stop_sequences;
  bool include_stop_sequence = true;
  bool output_special_tokens = false;  // Keep special tokens other than EOS.
  std::vector<int32_t> eos_token_ids;
};

class TextStream {
 public:
  // `prompt`: the request's prompt ids (its last few give the left context).
  TextStream(const Tokenizer* tokenizer, std::span<const int32_t> prompt,
             TextStreamOptions options);

  struct Delta {
    std::string text;           // Newly final text; may be empty.
    bool stopped = false;       // A stop sequence matched: the text is complete.
    std::string stop_sequence;  // The one that matched.
  };

  // Appends a generated token.
  absl::StatusOr<Delta> Add(int32_t token);
  // The text held back so far (at the end of generation). A character left
  // incomplete by the last tokens is dropped, as TGIS does.
  absl::StatusOr<std::string> Flush();
  // Undoes a stop-sequence cut: the text after the cut, now released
  // (TGIS: a stop sequence completed on the step that also reaches
  // max_new_tokens reports MAX_TOKENS with the untruncated text).
  absl::StatusOr<std::string> Uncut();

  const std::string& text() const { return text_; }  // All released text.

 private:
  // The text that tokens_[read_offset_, end) add to the decoding of the
  // window tokens_[prefix_offset_, read_offset_); it may end in U+FFFD.
  absl::StatusOr<std::string> PendingText() const;
  // Appends `pending` to decoded_ and slides the window past it.
  void Commit(const std::string& pending);

  const Tokenizer* tokenizer_;
  TextStreamOptions options_;
  // Context tokens of the prompt, then the generated ones (EOS and skipped
  // special tokens left out).
  std::vector<int32_t> tokens_;
  size_t prefix_offset_ = 0;  // Start of the window: context for the decoding.
  size_t read_offset_ = 0;    // Tokens before this are in decoded_.
  std::string decoded_;       // Text of tokens_[context, read_offset_).
  std::string text_;          // Released: a prefix of decoded_.
  size_t hold_back_ = 0;      // Bytes a stop sequence may still need.
  bool stopped_ = false;
};

}  // namespace fms

#endif  // FMS_SERVER_TEXT_STREAM_H_
