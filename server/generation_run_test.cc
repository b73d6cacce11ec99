// GenerationRun turns scheduler events into TGIS messages; these tests feed it
// events directly (no model) and check the stream shape and the unary response
// (tgis-api.md sections 1.5-1.7).

#include "server/generation_run.h"

#include <cstdlib>
#include <filesystem>

#include "gtest/gtest.h"
#include "server/spm_tokenizer.h"

namespace fms {
namespace {

constexpr int32_t kEos = 2;

class GenerationRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* models = std::getenv("FMS_TEST_MODELS");
    if (models == nullptr) GTEST_SKIP() << "FMS_TEST_MODELS unset: run tools/test";
    auto tokenizer =
        SpmTokenizer::Load((std::filesystem::path(models) / "mha" / "tokenizer.model").string());
    ASSERT_TRUE(tokenizer.ok());
    tokenizer_ = *std::move(tokenizer);
    context_ = {.tokenizer = tokenizer_.get(), .max_sequence_length = 64,
                .eos_token_ids = {kEos}};
  }

  std::unique_ptr<GenerationRun> Make(const std::string& text, ResolvedParams params = {}) {
    auto run = GenerationRun::Create(text, params, context_, /*random_seed=*/777);
    EXPECT_TRUE(run.ok()) << run.status();
    return run.ok() ? *std::move(run) : nullptr;
  }

  // Token events for `text`'s tokens (after the prompt), the last one final.
  std::vector<SequenceEvent> Events(const std::string& text, FinishReason finish) {
    std::vector<SequenceEvent> events;
    const auto ids = tokenizer_->Encode(text, false)->ids;
    for (size_t i = 0; i < ids.size(); ++i) {
      events.push_back({.has_token = true, .token = ids[i],
                        .generated = static_cast<uint32_t>(i + 1)});
    }
    events.back().finish = finish;
    return events;
  }

  std::vector<fmaas::GenerationResponse> Drain(GenerationRun& run, absl::Status* status) {
    std::vector<fmaas::GenerationResponse> messages;
    fmaas::GenerationResponse m;
    while (run.NextMessage(&m)) messages.push_back(m);
    EXPECT_TRUE(run.done());
    *status = run.Result().status();
    return messages;
  }

  std::unique_ptr<SpmTokenizer> tokenizer_;
  RunContext context_;
};

TEST_F(GenerationRunTest, StreamShapeAndUnaryAgree) {
  ResolvedParams params;
  params.sampling.sample = true;  // No seed given: the random one is used and echoed.
  params.input_text = true;
  auto run = Make("The king", params);
  const fmaas::GenerationResponse first = run->FirstMessage();
  EXPECT_EQ(first.input_token_count(), run->input_token_count());
  EXPECT_EQ(first.text(), "The king");
  EXPECT_EQ(first.seed(), 777u);
  EXPECT_EQ(first.generated_token_count(), 0u);
  for (const auto& e : Events("went to the river", FinishReason::kMaxTokens)) run->OnEvent(e);
  absl::Status status;
  const auto messages = Drain(*run, &status);
  ASSERT_TRUE(status.ok());
  std::string streamed;
  for (size_t i = 0; i < messages.size(); ++i) {
    streamed += messages[i].text();
    const bool last = i + 1 == messages.size();
    EXPECT_EQ(messages[i].stop_reason(), last ? fmaas::MAX_TOKENS : fmaas::NOT_FINISHED);
    EXPECT_EQ(messages[i].seed(), last ? 777u : 0u);  // Only the first and final carry it.
    EXPECT_EQ(messages[i].input_token_count(), 0u);
  }
  auto unary = run->Result();
  ASSERT_TRUE(unary.ok());
  EXPECT_EQ(unary->text(), "The king" + streamed);
  EXPECT_EQ(streamed, " went to the river");
  EXPECT_EQ(unary->stop_reason(), fmaas::MAX_TOKENS);
  EXPECT_EQ(unary->generated_token_count(), messages.back().generated_token_count());
}

TEST_F(GenerationRunTest, EmptyDeltasAreSuppressed) {
  auto run = Make("Smile");
  // The four byte pieces of one emoji: only the last completes text.
  auto events = Events(" \xF0\x9F\x99\x82", FinishReason::kNotFinished);
  for (auto& e : events) run->OnEvent(e);
  run->OnEvent({.has_token = true, .token = kEos, .generated = static_cast<uint32_t>(events.size() + 1),
                .finish = FinishReason::kEosToken});
  absl::Status status;
  const auto messages = Drain(*run, &status);
  for (const auto& m : messages) {
    EXPECT_TRUE(!m.text().empty() || m.stop_reason() != fmaas::NOT_FINISHED);
  }
  EXPECT_EQ(messages.back().stop_reason(), fmaas::EOS_TOKEN);
  EXPECT_EQ(run->Result()->text(), " \xF0\x9F\x99\x82");  // EOS is not text.
}

TEST_F(GenerationRunTest, StopSequenceEndsTheRunAtOnce) {
  ResolvedParams params;
  params.stop_sequences = {"the r"};
  params.include_stop_sequence = false;
  auto run = Make("The king", params);
  bool asked_to_finish = false;
  for (const auto& e : Events(" went to the river", FinishReason::kNotFinished)) {
    asked_to_finish |= run->OnEvent(e);
  }
  EXPECT_TRUE(asked_to_finish);
  auto unary = run->Result();
  ASSERT_TRUE(unary.ok());
  EXPECT_EQ(unary->text(), " went to ");
  EXPECT_EQ(unary->stop_reason(), fmaas::STOP_SEQUENCE);
  EXPECT_EQ(unary->stop_sequence(), "the r");
}

TEST_F(GenerationRunTest, StopSequenceOnTheLastAllowedTokenReportsMaxTokensUntruncated) {
  ResolvedParams params;
  params.stop_sequences = {"river"};
  params.include_stop_sequence = false;
  auto run = Make("The king", params);
  // The stop completes on the final token, which also reaches max_new_tokens.
  for (const auto& e : Events(" went to the river", FinishReason::kMaxTokens)) {
    EXPECT_FALSE(run->OnEvent(e));
  }
  auto unary = run->Result();
  ASSERT_TRUE(unary.ok());
  EXPECT_EQ(unary->stop_reason(), fmaas::MAX_TOKENS);
  EXPECT_EQ(unary->text(), " went to the river");
  EXPECT_EQ(unary->stop_sequence(), "");
}

TEST_F(GenerationRunTest, ErrorFailsTheCallWithTgisMessage) {
  auto run = Make("Water");
  run->OnEvent({.finish = FinishReason::kError, .error = absl::InternalError("worker 0 exited")});
  absl::Status status;
  Drain(*run, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(status.message(), "Request failed during generation: worker 0 exited");
  EXPECT_EQ(run->Result().status().code(), absl::StatusCode::kUnknown);
}

TEST_F(GenerationRunTest, QueuedTimeLimitEndsWithZeroTokens) {
  auto run = Make("Water");
  run->OnEvent({.finish = FinishReason::kTimeLimit});
  absl::Status status;
  const auto messages = Drain(*run, &status);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].stop_reason(), fmaas::TIME_LIMIT);
  EXPECT_EQ(messages[0].generated_token_count(), 0u);
}

TEST_F(GenerationRunTest, MaxNewTokensShrinksToFitAsTokenLimit) {
  ResolvedParams params;
  params.max_new_tokens = 100;
  auto run = Make("The king", params);
  EXPECT_EQ(run->request().stopping.max_new_tokens, 64 - run->input_token_count());
  EXPECT_TRUE(run->request().stopping.max_new_tokens_clamped);
  auto too_long = GenerationRun::Create(std::string(300, 'x'), {}, context_, 1);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fms
