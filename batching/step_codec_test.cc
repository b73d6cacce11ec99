#include "batching/step_codec.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace fms {
namespace {

StepPlan FullPlan() {
  StepPlan plan{.step = 41};
  plan.new_sequences.push_back(
      {.id = 7,
       .prompt = {1, 15043, 3186},
       .sampling = {.sample = true, .temperature = 0.7f, .top_k = 50, .top_p = 0.9f,
                    .typical_p = 0.5f, .seed = 0xFFFFFFFFFFULL, .repetition_penalty = 1.2f,
                    .length_penalty_start = 3, .length_penalty_decay = 1.5f,
                    .min_new_tokens = 4, .logprobs = true, .ranks = true, .top_n = 5},
       .adapter = "team/lora16@3"});
  plan.chunks.push_back({.id = 7, .token_ids = {1, 15043}, .context_len = 0,
                         .new_blocks = {3, 9}, .sample = false, .prompt_details = true});
  plan.chunks.push_back({.id = 2, .token_ids = {88}, .context_len = 130,
                         .new_blocks = {12}});
  plan.chunks.push_back({.id = 8, .token_ids = {5, 6}, .context_len = 32,
                         .cached_blocks = {4, 11}, .new_blocks = {13}});
  plan.finished = {4, 5};
  plan.preempted = {9};
  return plan;
}

TEST(StepCodec, PlanRoundTripsThroughBytes) {
  const StepPlan plan = FullPlan();
  worker::StepPlan parsed;
  ASSERT_TRUE(parsed.ParseFromString(ToProto(plan).SerializeAsString()));
  auto back = FromProto(parsed);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, plan);
}

TEST(StepCodec, EverySamplingFieldOfTheWireIsFilled) {
  // FullPlan sets every SamplingParams field to a non-default value, so every
  // field of the wire message must be present: one the codec forgets stays
  // at its default and fails here.
  const worker::StepPlan proto = ToProto(FullPlan());
  const google::protobuf::Message& sampling = proto.new_sequences(0).sampling();
  const google::protobuf::Descriptor* descriptor = sampling.GetDescriptor();
  const google::protobuf::Reflection* reflection = sampling.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    EXPECT_TRUE(reflection->HasField(sampling, descriptor->field(i)))
        << descriptor->field(i)->name() << " is not set by ToProto";
  }
  EXPECT_EQ(descriptor->field_count(), 13);
}

TEST(StepCodec, ResultRoundTripsThroughBytes) {
  StepResult result{.step = 41};
  result.outputs.push_back(
      {.id = 7, .token = 29871,
       .details = {.logprob = -0.25f, .rank = 2, .top = {{29871, -0.25f}, {13, -1.5f}}},
       .prompt_details = {{.logprob = 0.0f}, {.logprob = -3.5f, .rank = 17}}});
  result.outputs.push_back({.id = 2, .token = 2});
  result.outputs.push_back({.id = 3, .non_finite_logits = true});
  result.timings = {.decode_us = 1, .wait_us = 2, .prepare_us = 3, .forward_us = 40000,
                    .sample_us = 500, .encode_us = 6};
  worker::StepResult parsed;
  ASSERT_TRUE(parsed.ParseFromString(ToProto(result).SerializeAsString()));
  auto back = FromProto(parsed);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, result);
}

TEST(StepCodec, NanLogprobOfTheFirstPromptTokenSurvives) {
  StepResult result{.step = 1};
  result.outputs.push_back(
      {.id = 1, .prompt_details = {{.logprob = std::numeric_limits<float>::quiet_NaN()}}});
  auto back = FromProto(ToProto(result));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(std::isnan(back->outputs[0].prompt_details[0].logprob));
}

TEST(StepCodec, VersionMismatchIsRejected) {
  worker::StepPlan proto = ToProto(FullPlan());
  proto.set_version(kWorkerProtocolVersion + 1);
  EXPECT_EQ(FromProto(proto).status().code(), absl::StatusCode::kFailedPrecondition);
  worker::StepResult result;  // version 0: never valid
  EXPECT_FALSE(FromProto(result).ok());
}

}  // namespace
}  // namespace fms
