#include "server/text_stream.h"

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/spm_tokenizer.h"

namespace fms {
namespace {

constexpr int32_t kEos = 2;

// The byte-fallback BPE tokenizer of the test checkpoints (tools/test sets
// FMS_TEST_MODELS).
class TextStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* models = std::getenv("FMS_TEST_MODELS");
    if (models == nullptr) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
    auto tokenizer =
        SpmTokenizer::Load((std::filesystem::path(models) / "mha" / "tokenizer.model").string());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }

  // Streams `generated` after `prompt`; returns the deltas and the flushed end.
  std::vector<std::string> Stream(const std::string& prompt, const std::string& generated,
                                  TextStreamOptions options, TextStream::Delta* last = nullptr) {
    const std::vector<int32_t> prompt_ids = tokenizer_->Encode(prompt, false)->ids;
    const std::vector<int32_t> full = tokenizer_->Encode(prompt + generated, false)->ids;
    // The generated tokens are those after the prompt's (same split here).
    EXPECT_EQ(std::vector<int32_t>(full.begin(), full.begin() + prompt_ids.size()), prompt_ids);
    options.eos_token_ids = {kEos};
    TextStream stream(tokenizer_.get(), prompt_ids, options);
    std::vector<std::string> deltas;
    std::vector<int32_t> tokens(full.begin() + prompt_ids.size(), full.end());
    tokens.push_back(kEos);
    for (int32_t token : tokens) {
      auto delta = stream.Add(token);
      EXPECT_TRUE(delta.ok());
      deltas.push_back(delta->text);
      if (last != nullptr) *last = *delta;
      if (delta->stopped) return deltas;
    }
    deltas.push_back(*stream.Flush());
    return deltas;
  }

  static std::string Join(const std::vector<std::string>& parts) {
    std::string all;
    for (const auto& p : parts) all += p;
    return all;
  }

  std::unique_ptr<SpmTokenizer> tokenizer_;
};

TEST_F(TextStreamTest, DeltasConcatenateToTheTextWithItsLeadingSpace) {
  EXPECT_EQ(Join(Stream("The king", " and the queen went to the river.", {})),
            " and the queen went to the river.");
}

// A lone "▁" token followed by "▁k": SentencePiece decodes the pair as "k"
// when it starts a decoding, so a window starting at the lone space lost it
// (found by tests/fuzz/text_stream_fuzz).
TEST_F(TextStreamTest, ALoneSpaceTokenBeforeASpacedTokenKeepsBothSpaces) {
  std::vector<int32_t> ids;
  for (const char* piece : {"\u2581t", "o", "\u2581", "\u2581k", "ing"}) {
    int32_t id = 0;
    while (id < tokenizer_->vocab_size() && tokenizer_->IdToPiece(id) != piece) ++id;
    ASSERT_LT(id, tokenizer_->vocab_size()) << piece;
    ids.push_back(id);
  }
  TextStream stream(tokenizer_.get(), {}, {.eos_token_ids = {kEos}});
  std::string text;
  for (int32_t id : ids) text += stream.Add(id)->text;
  text += *stream.Flush();
  EXPECT_EQ(text, *tokenizer_->Decode(ids, true));
  EXPECT_EQ(text, "to  king");
}

TEST_F(TextStreamTest, ByteFallbackCharactersArriveWhole) {
  const std::string text = " caf\xC3\xA9 \xF0\x9F\x99\x82 ok";  // "café 🙂 ok"
  const auto deltas = Stream("Water", text, {});
  EXPECT_EQ(Join(deltas), text);
  for (const std::string& d : deltas) {
    EXPECT_EQ(d.find("\xEF\xBF\xBD"), std::string::npos) << "half a character released";
  }
}

TEST_F(TextStreamTest, StopSequenceAcrossTokensCutsTheText) {
  TextStream::Delta last;
  auto deltas = Stream("Once", " the great river came down", {.stop_sequences = {"river c"},
                                                              .include_stop_sequence = false},
                       &last);
  EXPECT_TRUE(last.stopped);
  EXPECT_EQ(last.stop_sequence, "river c");
  EXPECT_EQ(Join(deltas), " the great ");
  deltas = Stream("Once", " the great river came down",
                  {.stop_sequences = {"nothing", "river c"}, .include_stop_sequence = true}, &last);
  EXPECT_EQ(Join(deltas), " the great river c");
}

TEST_F(TextStreamTest, HeldBackTextNeverIncludesACutStop) {
  // With include_stop_sequence = false nothing of "great r" may be released
  // before the match is known.
  const auto deltas = Stream("Once", " the great river", {.stop_sequences = {"great r"},
                                                         .include_stop_sequence = false});
  std::string released;
  for (const std::string& d : deltas) {
    released += d;
    EXPECT_EQ(released.find("great"), std::string::npos) << released;
  }
}

TEST_F(TextStreamTest, HoldBackNeverSplitsACharacter) {
  // Holding back bytes for a stop sequence must not cut "é" in half.
  const auto deltas = Stream("Water", " caf\xC3\xA9 caf\xC3\xA9 caf\xC3\xA9 and",
                             {.stop_sequences = {"zzzzz"}, .include_stop_sequence = false});
  for (const std::string& d : deltas) {
    if (d.empty()) continue;
    EXPECT_NE(static_cast<unsigned char>(d.front()) & 0xC0, 0x80) << "starts mid-character";
  }
  EXPECT_EQ(Join(deltas), " caf\xC3\xA9 caf\xC3\xA9 caf\xC3\xA9 and");
}

TEST_F(TextStreamTest, OutputSpecialTokensShowsControlTokensButNeverEos) {
  const int32_t bos = tokenizer_->bos_id();
  for (const bool show : {false, true}) {
    TextStream stream(tokenizer_.get(), {},
                      {.output_special_tokens = show, .eos_token_ids = {kEos}});
    std::string text;
    for (int32_t token : {bos, kEos}) text += stream.Add(token)->text;
    text += *stream.Flush();
    EXPECT_EQ(text, show ? "<s>" : "") << show;
  }
}

TEST_F(TextStreamTest, EosIsNeverText) {
  TextStream stream(tokenizer_.get(), {}, {.eos_token_ids = {kEos}});
  auto delta = stream.Add(kEos);
  ASSERT_TRUE(delta.ok());
  EXPECT_EQ(delta->text, "");
  EXPECT_EQ(*stream.Flush(), "");
}

// Byte-level BPE (the "bytebpe" test model's tokenizer.json): an emoji the
// corpus never saw is four byte tokens, each alone an incomplete character.
class ByteLevelTextStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* models = std::getenv("FMS_TEST_MODELS");
    if (models == nullptr) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
    auto tokenizer = LoadTokenizer((std::filesystem::path(models) / "bytebpe").string());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }

  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(ByteLevelTextStreamTest, PartialBytesArriveAsWholeCharactersAndMatchTheFullDecode) {
  const std::string prompt = "The king";
  const std::string generated = " went \xF0\x9F\x99\x82 to \xE6\x97\xA5\xE6\x9C\xAC the river";
  const auto prompt_ids = tokenizer_->Encode(prompt, true)->ids;
  const auto ids = tokenizer_->Encode(generated, false)->ids;
  TextStream stream(tokenizer_.get(), prompt_ids, {.eos_token_ids = {kEos}});
  std::string joined;
  for (int32_t id : ids) {
    auto delta = stream.Add(id);
    ASSERT_TRUE(delta.ok());
    EXPECT_EQ(delta->text.find("\xEF\xBF\xBD"), std::string::npos) << "half a character";
    joined += delta->text;
  }
  joined += *stream.Flush();
  EXPECT_EQ(joined, *tokenizer_->Decode(ids, true));
  EXPECT_EQ(joined, generated);
}

TEST_F(ByteLevelTextStreamTest, AnIncompleteCharacterAtTheEndIsDropped) {
  const auto ids = tokenizer_->Encode(" ok \xF0\x9F\x99\x82", false)->ids;
  TextStream stream(tokenizer_.get(), {}, {});
  std::string text;
  for (size_t i = 0; i + 1 < ids.size(); ++i) text += stream.Add(ids[i])->text;  // 3 of 4 bytes.
  text += *stream.Flush();
  EXPECT_EQ(text, " ok ");  // TGIS trims the trailing U+FFFD.
}

TEST_F(ByteLevelTextStreamTest, OutputSpecialTokensShowsThemButNeverEos) {
  const auto ids = tokenizer_->Encode("<|im_start|>hi<|im_end|>", false)->ids;
  ASSERT_EQ(ids.front(), 1);
  ASSERT_EQ(ids.back(), kEos);
  for (const bool show : {false, true}) {
    TextStream stream(tokenizer_.get(), {}, {.output_special_tokens = show, .eos_token_ids = {kEos}});
    std::string text;
    for (int32_t id : ids) text += stream.Add(id)->text;
    text += *stream.Flush();
    EXPECT_EQ(text, show ? "<|im_start|>hi" : "hi") << show;
  }
}

TEST_F(ByteLevelTextStreamTest, DeltasCarryWholeGraphemeClusters) {
  // Thumbs up + skin tone, a ZWJ family, e + combining acute: each is one
  // cluster of several characters, which byte tokens deliver one by one.
  const std::string thumb = "\xF0\x9F\x91\x8D", tone = "\xF0\x9F\x8F\xBD", zwj = "\xE2\x80\x8D";
  const std::string family = "\xF0\x9F\x91\xA8" + zwj + "\xF0\x9F\x91\xA9" + zwj + "\xF0\x9F\x91\xA7";
  const std::string text = " ok " + thumb + tone + " and " + family + " cafe\xCC\x81 done";
  const auto ids = tokenizer_->Encode(text, false)->ids;
  TextStream stream(tokenizer_.get(), {}, {});
  std::vector<std::string> deltas;
  for (int32_t id : ids) deltas.push_back(stream.Add(id)->text);
  deltas.push_back(*stream.Flush());
  std::string joined;
  for (const std::string& d : deltas) {
    joined += d;
    if (d.empty()) continue;
    for (const std::string& continuation : {tone, zwj, std::string("\xCC\x81")}) {
      EXPECT_NE(d.rfind(continuation, 0), 0u) << "a delta starts inside a cluster";
    }
    EXPECT_FALSE(d.size() >= 3 && d.compare(d.size() - 3, 3, zwj) == 0) << "ends on a ZWJ";
  }
  EXPECT_EQ(joined, text);
}

}  // namespace
}  // namespace fms
