// Smoke test of the foundation: in ONE process, a LibTorch op, SentencePiece
// through the dlopen shim, and a gRPC call with the generated TGIS stubs. Each
// of these has a known way to break the others (libtorch-build-notes.md
// sections 1.3, 5 and 6): wrong protobuf or fmt headers, sentencepiece's
// protobuf 3.14 and FLAGS_* symbols, a missing rpath, abseil link order.

#include <ATen/ATen.h>
#include <fmt/core.h>
#include <google/protobuf/stubs/common.h>
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "proto/generation.grpc.pb.h"
#include "server/spm_tokenizer.h"
#include "spdlog/spdlog.h"

namespace fms {
namespace {

namespace fs = std::filesystem;

// Trains a small BPE tokenizer with byte fallback using Debian's spm_train.
std::string TrainTokenizer() {
  const fs::path dir = std::getenv("TEST_TMPDIR");
  const fs::path corpus = dir / "corpus.txt";
  std::ofstream out(corpus);
  const std::vector<std::string> words = {
      "hello", "world", "the", "quick", "brown", "fox", "jumps", "over",
      "lazy", "dog", "serving", "models", "tokens", "stream", "batch"};
  for (size_t i = 0; i < 2000; ++i) {
    out << words[i % words.size()] << " " << words[(i * 7) % words.size()]
        << " " << words[(i * 11) % words.size()] << ".\n";
  }
  out.close();
  const std::string prefix = (dir / "tok").string();
  const std::string command =
      "spm_train --input=" + corpus.string() + " --model_prefix=" + prefix +
      " --vocab_size=320 --model_type=bpe --byte_fallback=true"
      " --character_coverage=1.0 --hard_vocab_limit=false > " + prefix +
      ".log 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << "see " << prefix << ".log";
  return prefix + ".model";
}

void ExpectTorchWorks() {
  // [2, 2] @ [2, 2]
  const at::Tensor a = at::arange(4, at::kFloat).reshape({2, 2});
  const at::Tensor product = at::matmul(a, a);
  EXPECT_FLOAT_EQ(product[0][0].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(product[1][1].item<float>(), 11.0f);
  // [batch=1, heads=2, seq=3, head_dim=4]
  const at::Tensor q = at::ones({1, 2, 3, 4});
  const at::Tensor attn =
      at::scaled_dot_product_attention(q, q, q, {}, 0.0, /*is_causal=*/true);
  EXPECT_EQ(attn.sizes(), q.sizes());
}

void ExpectTrainedTokenizerRoundTrips() {
  auto tokenizer = SpmTokenizer::Load(TrainTokenizer());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const SpmTokenizer& tok = **tokenizer;
  EXPECT_GE(tok.vocab_size(), 259);  // 3 specials + 256 byte pieces at least.
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  for (const std::string text : {"hello world", "the lazy fox 🙂 jumps"}) {
    const Encoding encoding = *tok.Encode(text, false);
    ASSERT_FALSE(encoding.ids.empty());
    EXPECT_EQ(encoding.ends.back(), text.size()) << text;
    auto decoded = tok.Decode(encoding.ids, true);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, text);
  }
  // The emoji is not in the corpus: it must come back as four byte pieces.
  const Encoding emoji = *tok.Encode("🙂", false);
  int byte_pieces = 0;
  for (int32_t id : emoji.ids) byte_pieces += tok.IsByte(id) ? 1 : 0;
  EXPECT_EQ(byte_pieces, 4);
  EXPECT_EQ(tok.IdToPiece(emoji.ids.back()), "<0x82>");
  EXPECT_FALSE(tok.Decode(std::vector<int32_t>{tok.vocab_size()}, true).ok());
}

class ModelInfoOnly final : public fmaas::GenerationService::Service {
  grpc::Status ModelInfo(grpc::ServerContext*, const fmaas::ModelInfoRequest*,
                         fmaas::ModelInfoResponse* response) override {
    response->set_max_sequence_length(4096);
    response->set_max_new_tokens(1024);
    return grpc::Status::OK;
  }
};

void ExpectInProcessGrpcCallWorks() {
  ModelInfoOnly service;
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = fmaas::GenerationService::NewStub(
      server->InProcessChannel(grpc::ChannelArguments()));

  grpc::ClientContext context;
  fmaas::ModelInfoResponse info;
  ASSERT_TRUE(stub->ModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.model_kind(), fmaas::ModelInfoResponse::DECODER_ONLY);
  EXPECT_EQ(info.max_sequence_length(), 4096u);
  EXPECT_EQ(info.max_new_tokens(), 1024u);

  grpc::ClientContext generate_context;
  fmaas::BatchedGenerationResponse unused;
  EXPECT_EQ(stub->Generate(&generate_context, {}, &unused).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  server->Shutdown();
}

TEST(SmokeTest, TorchTokenizerAndGrpcInOneProcess) {
  ExpectTorchWorks();
  ExpectTrainedTokenizerRoundTrips();
  ExpectInProcessGrpcCallWorks();
  spdlog::info("smoke test: torch, tokenizer and gRPC in one process");
}

TEST(SmokeTest, DebianHeadersAreNotShadowedByTheWheel) {
  // The wheel ships protobuf 3.13 and fmt 12 headers; gRPC and spdlog are
  // built against Debian's protobuf 3.21.12 and fmt 9.1.
  EXPECT_EQ(GOOGLE_PROTOBUF_VERSION, 3021012);
  EXPECT_EQ(FMT_VERSION, 90100);
}

TEST(SmokeTest, Llama2TokenizerFromSharedData) {
  const char* shared = std::getenv("FMS_SHARED_DIR");
  const fs::path path =
      fs::path(shared ? shared : "") / "data/llama2-tokenizer.model";
  if (!fs::exists(path)) {
    GTEST_SKIP() << "LLaMa 2 tokenizer absent at " << path
                 << " (set FMS_SHARED_DIR to the shared/ folder)";
  }
  ExpectTorchWorks();  // LibTorch loaded and used before the shim.
  auto tokenizer = SpmTokenizer::Load(path.string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 32000);
  EXPECT_EQ((*tokenizer)->Encode("Hello world", false)->ids,
            (std::vector<int32_t>{15043, 3186}));
  EXPECT_EQ((*tokenizer)->IdToPiece(15043), "▁Hello");
  auto text = (*tokenizer)->Decode(std::vector<int32_t>{15043, 3186}, true);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "Hello world");
}

}  // namespace
}  // namespace fms
