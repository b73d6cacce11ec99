// Fuzzes the streaming text path (server/text_stream.h): token ids through
// incremental detokenization and stop-sequence matching, for both tokenizer
// kinds. Input: byte 0 picks the tokenizer (tokenizer.json or
// tokenizer.model) and the options; then up to two stop sequences, each a
// length byte and its bytes; the rest are token ids, two bytes each (little
// endian, taken modulo the vocabulary, so EOS and special tokens occur).
// Oracle: without a stop, the deltas and the flush concatenate to the full
// decode of the tokens (EOS left out; a trailing incomplete character
// dropped); with one, to a prefix of it that ends at a match.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/escaping.h"
#include "server/text_stream.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/test_tokenizers.h"

namespace fms {
namespace {

const Tokenizer* tokenizers[2] = {nullptr, nullptr};

// The full decode the stream must add up to: every token but EOS and (unless
// shown) special ones, with trailing U+FFFD of an unfinished character cut.
std::string FullDecode(const Tokenizer& t, const std::vector<int32_t>& ids, bool show_special) {
  std::vector<int32_t> kept;
  for (int32_t id : ids) {
    if (id == t.eos_id() || (!show_special && t.IsSpecial(id))) continue;
    kept.push_back(id);
  }
  auto text = t.Decode(kept, !show_special);
  FUZZ_CHECK(text.ok(), "Decode failed on ids inside the vocabulary");
  while (text->size() >= 3 && text->compare(text->size() - 3, 3, "\xEF\xBF\xBD") == 0) {
    text->resize(text->size() - 3);
  }
  return *text;
}

void Run(const Tokenizer& t, uint8_t flags, const std::vector<std::string>& stops,
         const std::vector<int32_t>& ids) {
  TextStreamOptions options{.stop_sequences = stops,
                            .include_stop_sequence = (flags & 2) != 0,
                            .output_special_tokens = (flags & 4) != 0,
                            .eos_token_ids = {t.eos_id()}};
  TextStream stream(&t, {}, options);
  std::string joined;
  std::string stopped_on;
  for (int32_t id : ids) {
    auto delta = stream.Add(id);
    FUZZ_CHECK(delta.ok(), "Add failed on an id inside the vocabulary");
    joined += delta->text;
    if (delta->stopped) {
      stopped_on = delta->stop_sequence;
      break;
    }
  }
  auto rest = stream.Flush();
  FUZZ_CHECK(rest.ok(), "Flush failed");
  joined += *rest;
  FUZZ_CHECK(joined == stream.text(), "deltas differ from text()");
  const std::string full = FullDecode(t, ids, options.output_special_tokens);
  if (stopped_on.empty()) {
    // A stop may still appear in the full text if it only completed in the
    // trailing incomplete character that was dropped; otherwise none does.
    if (joined != full) {
      std::fprintf(stderr, "streamed: \"%s\"\nfull:     \"%s\"\n",
                   absl::CHexEscape(joined).c_str(), absl::CHexEscape(full).c_str());
    }
    FUZZ_CHECK(joined == full, "the deltas do not add up to the full decode");
    return;
  }
  FUZZ_CHECK(full.compare(0, joined.size(), joined) == 0, "stopped text is not a prefix");
  const size_t at = full.find(stopped_on);
  FUZZ_CHECK(at != std::string::npos, "stopped on a sequence the text does not hold");
  if (options.include_stop_sequence) {
    FUZZ_CHECK(joined.size() >= stopped_on.size() &&
                   joined.compare(joined.size() - stopped_on.size(), stopped_on.size(),
                                  stopped_on) == 0,
               "the text does not end with the stop sequence");
  } else {
    FUZZ_CHECK(joined.find(stopped_on) == std::string::npos, "the cut text holds the stop");
  }
}

}  // namespace
}  // namespace fms

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fms::tokenizers[0] = fms::LoadTestTokenizer("bytebpe").release();
  fms::tokenizers[1] = fms::LoadTestTokenizer("mha").release();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  const fms::Tokenizer& t = *fms::tokenizers[flags & 1];
  size_t pos = 1;
  std::vector<std::string> stops;
  for (int i = 0; i < ((flags >> 3) & 3) && pos < size; ++i) {
    const size_t len = data[pos++] % 8 + 1;
    if (pos + len > size) return 0;
    stops.emplace_back(reinterpret_cast<const char*>(data + pos), len);
    pos += len;
  }
  std::vector<int32_t> ids;
  for (; pos + 1 < size && ids.size() < 256; pos += 2) {
    ids.push_back(static_cast<int32_t>(data[pos] | (data[pos + 1] << 8)) % t.vocab_size());
  }
  fms::Run(t, flags, stops, ids);
  return 0;
}
