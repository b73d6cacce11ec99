// The Tokenizer seam: LoadTokenizer's choice of file, HfTokenizer over the
// Rust crate (byte offsets, specials, BOS/EOS discovery, errors), and the one
// prompt encoder. Uses the test checkpoints' tokenizers (tools/test sets
// FMS_TEST_MODELS): "bytebpe" has a byte-level BPE tokenizer.json (ChatML
// specials, no BOS), "mha" a SentencePiece tokenizer.model.

#include "server/tokenizer.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "server/hf_tokenizer.h"

namespace fms {
namespace {

namespace fs = std::filesystem;

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* models = std::getenv("FMS_TEST_MODELS");
    if (models == nullptr) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
    models_ = models;
  }

  fs::path TempDir(const std::string& name) {
    const fs::path dir = fs::path(::testing::TempDir()) / name;
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
  }

  fs::path models_;
};

TEST_F(TokenizerTest, TokenizerJsonIsPreferredThenTokenizerModel) {
  const fs::path both = TempDir("both");
  fs::copy_file(models_ / "bytebpe" / "tokenizer.json", both / "tokenizer.json");
  fs::copy_file(models_ / "mha" / "tokenizer.model", both / "tokenizer.model");
  auto tokenizer = LoadTokenizer(both.string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_NE(dynamic_cast<HfTokenizer*>(tokenizer->get()), nullptr);
  fs::remove(both / "tokenizer.json");
  tokenizer = LoadTokenizer(both.string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(dynamic_cast<HfTokenizer*>(tokenizer->get()), nullptr);
  EXPECT_EQ((*tokenizer)->bos_id(), 1);  // SentencePiece: <s>.
}

TEST_F(TokenizerTest, NoTokenizerIsOneErrorNamingTheDirectory) {
  const fs::path empty = TempDir("empty");
  auto tokenizer = LoadTokenizer(empty.string());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tokenizer.status().message(),
            empty.string() + ": no tokenizer.json or tokenizer.model in the model directory");
}

TEST_F(TokenizerTest, UnparsableTokenizerJsonNamesTheFileAndTheLibraryMessage) {
  const fs::path dir = TempDir("broken");
  std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "BPE", "vocab": )";
  auto tokenizer = LoadTokenizer(dir.string());
  ASSERT_FALSE(tokenizer.ok());
  const std::string message(tokenizer.status().message());
  EXPECT_EQ(message.rfind("cannot load " + (dir / "tokenizer.json").string() + ": ", 0), 0u)
      << message;
  EXPECT_NE(message.find("EOF while parsing"), std::string::npos) << message;  // serde's words.
}

TEST_F(TokenizerTest, ByteLevelEncodingHasByteOffsetsAndNoBos) {
  auto tokenizer = LoadTokenizer((models_ / "bytebpe").string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Tokenizer& tok = **tokenizer;
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), -1);  // The post-processor adds nothing.
  EXPECT_EQ(tok.eos_id(), 2);   // tokenizer_config.json: <|im_end|>.
  EXPECT_TRUE(tok.IsSpecial(2));
  EXPECT_FALSE(tok.IsSpecial(300));
  const std::string text = "caf\xC3\xA9 \xF0\x9F\x99\x82<|im_end|>";  // "café 🙂<|im_end|>"
  auto encoding = tok.Encode(text, true);
  ASSERT_TRUE(encoding.ok()) << encoding.status();
  ASSERT_FALSE(encoding->ids.empty());
  EXPECT_EQ(encoding->ids.back(), 2);  // The special token's text is the token.
  EXPECT_EQ(encoding->ends.back(), text.size());  // Bytes, not characters (15 chars).
  EXPECT_EQ(tok.IdToPiece(2), "<|im_end|>");
  auto decoded = tok.Decode(encoding->ids, /*skip_special_tokens=*/false);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, text);
  decoded = tok.Decode(encoding->ids, /*skip_special_tokens=*/true);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, "caf\xC3\xA9 \xF0\x9F\x99\x82");
  EXPECT_EQ(tok.Decode(std::vector<int32_t>{512}, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tok.IdToPiece(-1), "");
}

TEST_F(TokenizerTest, PromptEncoderKeepsTheLastTokens) {
  auto tokenizer = LoadTokenizer((models_ / "mha").string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto full = EncodePrompt(**tokenizer, "the king and the queen", 0);
  ASSERT_TRUE(full.ok());
  EXPECT_FALSE(full->truncated);
  EXPECT_EQ(full->encoding.ids.front(), 1);  // BOS, covering (0, 0).
  EXPECT_EQ(full->encoding.ends.front(), 0u);
  auto last3 = EncodePrompt(**tokenizer, "the king and the queen", 3);
  ASSERT_TRUE(last3.ok());
  EXPECT_TRUE(last3->truncated);
  EXPECT_EQ(last3->encoding.ids,
            std::vector<int32_t>(full->encoding.ids.end() - 3, full->encoding.ids.end()));
  EXPECT_EQ(last3->encoding.ends.back(), full->encoding.ends.back());
}

}  // namespace
}  // namespace fms
