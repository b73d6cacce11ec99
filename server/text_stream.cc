#include "server/text_stream.h"

#include <algorithm>

#include "server/hf_tokenizer_abi.h"

namespace fms {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
// Prompt tokens kept as left context: enough for any merge or leading-space
// rule to see the real neighbour (vLLM uses 5 as well).
constexpr size_t kContextTokens = 5;

bool EndsIncomplete(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0;
}

// The largest position <= pos of `s` from `from` on (a cluster boundary)
// that does not split a grapheme cluster.
size_t GraphemeFloor(const std::string& s, size_t from, size_t pos) {
  return from + fms_grapheme_floor(s.data() + from, s.size() - from, pos - from);
}

}  // namespace

TextStream::TextStream(const Tokenizer* tokenizer, std::span<const int32_t> prompt,
                       TextStreamOptions options)
    : tokenizer_(tokenizer), options_(std::move(options)) {
  const size_t context = std::min(prompt.size(), kContextTokens);
  tokens_.assign(prompt.end() - static_cast<std::ptrdiff_t>(context), prompt.end());
  read_offset_ = tokens_.size();
  size_t longest = 0;
  for (const std::string& stop : options_.stop_sequences) longest = std::max(longest, stop.size());
  if (longest > 0 && !options_.include_stop_sequence) hold_back_ = longest - 1;
}

absl::StatusOr<std::string> TextStream::PendingText() const {
  const bool skip = !options_.output_special_tokens;
  const std::span<const int32_t> all(tokens_);
  auto before = tokenizer_->Decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip);
  if (!before.ok()) return before.status();
  auto now = tokenizer_->Decode(all.subspan(prefix_offset_), skip);
  if (!now.ok()) return now.status();
  return now->size() > before->size() ? now->substr(before->size()) : std::string();
}

void TextStream::Commit(const std::string& pending) {
  decoded_ += pending;
  // The window moves on to the tokens just decoded, unless their text is only
  // spaces: SentencePiece drops every leading space of a decoding ("▁", "▁k"
  // decodes as "k"), so a window starting there would lose them (found by
  // tests/fuzz/text_stream_fuzz).
  if (pending.find_first_not_of(' ') != std::string::npos) prefix_offset_ = read_offset_;
  read_offset_ = tokens_.size();
}

absl::StatusOr<TextStream::Delta> TextStream::Add(int32_t token) {
  Delta delta;
  if (stopped_) return delta;
  const auto& eos = options_.eos_token_ids;
  if (std::find(eos.begin(), eos.end(), token) != eos.end()) return delta;
  if (tokenizer_->IsSpecial(token) && !options_.output_special_tokens) return delta;
  tokens_.push_back(token);
  auto pending = PendingText();
  if (!pending.ok()) return pending.status();
  if (pending->empty() || EndsIncomplete(*pending)) return delta;  // Wait for more bytes.
  Commit(*pending);
  // Stop sequences: search the part that is not released yet, plus overlap.
  for (const std::string& stop : options_.stop_sequences) {
    const size_t from = text_.size() >= stop.size() ? text_.size() - stop.size() + 1 : 0;
    const size_t at = decoded_.find(stop, from);
    if (at == std::string::npos) continue;
    const size_t end = at + (options_.include_stop_sequence ? stop.size() : 0);
    delta.text = end > text_.size() ? decoded_.substr(text_.size(), end - text_.size()) : "";
    text_ += delta.text;
    delta.stopped = stopped_ = true;
    delta.stop_sequence = stop;
    return delta;
  }
  // Whole grapheme clusters only, and the last one waits: the next token may
  // still extend it (a skin tone, a ZWJ, a combining mark), as in TGIS.
  const size_t limit = std::min(decoded_.size() > hold_back_ ? decoded_.size() - hold_back_ : 0,
                                decoded_.empty() ? 0 : decoded_.size() - 1);
  const size_t releasable = limit > text_.size() ? GraphemeFloor(decoded_, text_.size(), limit)
                                                 : text_.size();
  if (releasable > text_.size()) {
    delta.text = decoded_.substr(text_.size(), releasable - text_.size());
    text_ += delta.text;
  }
  return delta;
}

absl::StatusOr<std::string> TextStream::Uncut() {
  stopped_ = false;
  return Flush();
}

absl::StatusOr<std::string> TextStream::Flush() {
  if (stopped_) return std::string();
  if (read_offset_ < tokens_.size()) {  // The tokens of an incomplete character.
    auto pending = PendingText();
    if (!pending.ok()) return pending.status();
    while (EndsIncomplete(*pending)) pending->resize(pending->size() - 3);
    Commit(*pending);
  }
  std::string rest = decoded_.substr(text_.size());
  text_ += rest;
  return rest;
}

}  // namespace fms
