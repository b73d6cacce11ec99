#include "server/text_stream.h"

#include <algorithm>

namespace fms {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Bytes at the end of `s` that are an incomplete character (decoded as U+FFFD).
size_t IncompleteTail(const std::string& s) {
  size_t n = 0;
  while (s.size() >= n + 3 && s.compare(s.size() - n - 3, 3, kReplacement) == 0) n += 3;
  return n;
}

// The largest position <= pos that does not split a UTF-8 character.
size_t Utf8Boundary(const std::string& s, size_t pos) {
  while (pos > 0 && pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

}  // namespace

TextStream::TextStream(const Tokenizer* tokenizer, int32_t last_prompt_token,
                       TextStreamOptions options)
    : tokenizer_(tokenizer),
      last_prompt_token_(last_prompt_token),
      options_(std::move(options)) {
  size_t longest = 0;
  for (const std::string& stop : options_.stop_sequences) longest = std::max(longest, stop.size());
  if (longest > 0 && !options_.include_stop_sequence) hold_back_ = longest - 1;
}

absl::StatusOr<std::string> TextStream::DecodeGenerated() const {
  if (last_prompt_token_ < 0 || tokenizer_->IsControl(last_prompt_token_)) {
    return tokenizer_->Decode(tokens_);
  }
  // Decode with the last prompt token in front, then drop its text.
  std::vector<int32_t> with_context = {last_prompt_token_};
  with_context.insert(with_context.end(), tokens_.begin(), tokens_.end());
  auto full = tokenizer_->Decode(with_context);
  if (!full.ok()) return full.status();
  auto context = tokenizer_->Decode(std::vector<int32_t>{last_prompt_token_});
  if (!context.ok()) return context.status();
  return full->substr(std::min(context->size(), full->size()));
}

absl::StatusOr<TextStream::Delta> TextStream::Add(int32_t token) {
  Delta delta;
  if (stopped_) return delta;
  const auto& eos = options_.eos_token_ids;
  const bool is_eos = std::find(eos.begin(), eos.end(), token) != eos.end();
  if (is_eos || (tokenizer_->IsControl(token) && !options_.output_special_tokens)) {
    return delta;
  }
  tokens_.push_back(token);
  if (tokenizer_->IsControl(token)) {
    decoded_ += std::string(tokenizer_->IdToPiece(token));  // Shown as its piece.
  } else {
    auto decoded = DecodeGenerated();
    if (!decoded.ok()) return decoded.status();
    decoded_ = *std::move(decoded);
  }
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
  const size_t held = std::max(hold_back_, IncompleteTail(decoded_));
  const size_t releasable =
      Utf8Boundary(decoded_, decoded_.size() > held ? decoded_.size() - held : 0);
  if (releasable > text_.size()) {
    delta.text = decoded_.substr(text_.size(), releasable - text_.size());
    text_ += delta.text;
  }
  return delta;
}

std::string TextStream::Uncut() {
  stopped_ = false;
  return Flush();
}

std::string TextStream::Flush() {
  if (stopped_ || decoded_.size() <= text_.size()) return "";
  std::string rest = decoded_.substr(text_.size());
  text_ += rest;
  return rest;
}

}  // namespace fms
