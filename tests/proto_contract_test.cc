// The TGIS wire contract, checked from the generated descriptors: package,
// service and method names, streaming flags, and every message's field names,
// numbers, types and `optional` labels (shared/docs/tgis-api.md 1.1-1.3, 1.13).
// A renumbered, retyped, renamed, added or removed field fails here.

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "proto/generation.pb.h"

namespace fms {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;

// How a field is declared: singular (implicit presence), optional (explicit
// presence), repeated, or a member of a oneof.
enum class Label { kSingular, kOptional, kRepeated, kOneof };

struct FieldSpec {
  std::string name;
  int number;
  FieldDescriptor::Type type;
  Label label;
  std::string type_name = "";  // Full name for message and enum fields.
};

constexpr auto kString = FieldDescriptor::TYPE_STRING;
constexpr auto kUint32 = FieldDescriptor::TYPE_UINT32;
constexpr auto kUint64 = FieldDescriptor::TYPE_UINT64;
constexpr auto kFloat = FieldDescriptor::TYPE_FLOAT;
constexpr auto kBool = FieldDescriptor::TYPE_BOOL;
constexpr auto kMessage = FieldDescriptor::TYPE_MESSAGE;
constexpr auto kEnum = FieldDescriptor::TYPE_ENUM;
constexpr auto kSingular = Label::kSingular;
constexpr auto kOptional = Label::kOptional;
constexpr auto kRepeated = Label::kRepeated;
constexpr auto kOneof = Label::kOneof;

const std::map<std::string, std::vector<FieldSpec>>& Contract() {
  static const auto* contract = new std::map<std::string, std::vector<FieldSpec>>{
      {"fmaas.BatchedGenerationRequest",
       {{"model_id", 1, kString, kSingular},
        {"prefix_id", 2, kString, kOptional},
        {"requests", 3, kMessage, kRepeated, "fmaas.GenerationRequest"},
        {"adapter_id", 4, kString, kOptional},
        {"params", 10, kMessage, kSingular, "fmaas.Parameters"}}},
      {"fmaas.SingleGenerationRequest",
       {{"model_id", 1, kString, kSingular},
        {"prefix_id", 2, kString, kOptional},
        {"request", 3, kMessage, kSingular, "fmaas.GenerationRequest"},
        {"adapter_id", 4, kString, kOptional},
        {"params", 10, kMessage, kSingular, "fmaas.Parameters"}}},
      {"fmaas.GenerationRequest", {{"text", 2, kString, kSingular}}},
      {"fmaas.BatchedGenerationResponse",
       {{"responses", 1, kMessage, kRepeated, "fmaas.GenerationResponse"}}},
      {"fmaas.GenerationResponse",
       {{"generated_token_count", 2, kUint32, kSingular},
        {"text", 4, kString, kSingular},
        {"input_token_count", 6, kUint32, kSingular},
        {"stop_reason", 7, kEnum, kSingular, "fmaas.StopReason"},
        {"tokens", 8, kMessage, kRepeated, "fmaas.TokenInfo"},
        {"input_tokens", 9, kMessage, kRepeated, "fmaas.TokenInfo"},
        {"seed", 10, kUint64, kSingular},
        {"stop_sequence", 11, kString, kSingular}}},
      {"fmaas.Parameters",
       {{"method", 1, kEnum, kSingular, "fmaas.DecodingMethod"},
        {"sampling", 2, kMessage, kSingular, "fmaas.SamplingParameters"},
        {"stopping", 3, kMessage, kSingular, "fmaas.StoppingCriteria"},
        {"response", 4, kMessage, kSingular, "fmaas.ResponseOptions"},
        {"decoding", 5, kMessage, kSingular, "fmaas.DecodingParameters"},
        {"truncate_input_tokens", 6, kUint32, kSingular}}},
      {"fmaas.SamplingParameters",
       {{"temperature", 1, kFloat, kOptional},
        {"top_k", 2, kUint32, kSingular},
        {"top_p", 3, kFloat, kSingular},
        {"typical_p", 4, kFloat, kSingular},
        {"seed", 5, kUint64, kOptional}}},
      {"fmaas.StoppingCriteria",
       {{"max_new_tokens", 1, kUint32, kSingular},
        {"min_new_tokens", 2, kUint32, kSingular},
        {"time_limit_millis", 3, kUint32, kSingular},
        {"stop_sequences", 4, kString, kRepeated},
        {"include_stop_sequence", 5, kBool, kOptional}}},
      {"fmaas.ResponseOptions",
       {{"input_text", 1, kBool, kSingular},
        {"generated_tokens", 2, kBool, kSingular},
        {"input_tokens", 3, kBool, kSingular},
        {"token_logprobs", 4, kBool, kSingular},
        {"token_ranks", 5, kBool, kSingular},
        {"top_n_tokens", 6, kUint32, kSingular}}},
      {"fmaas.DecodingParameters",
       {{"repetition_penalty", 1, kFloat, kSingular},
        {"length_penalty", 2, kMessage, kOptional,
         "fmaas.DecodingParameters.LengthPenalty"},
        {"format", 3, kEnum, kOneof, "fmaas.DecodingParameters.ResponseFormat"},
        {"json_schema", 4, kString, kOneof},
        {"regex", 5, kString, kOneof},
        {"choice", 6, kMessage, kOneof, "fmaas.DecodingParameters.StringChoices"},
        {"grammar", 7, kString, kOneof}}},
      {"fmaas.DecodingParameters.LengthPenalty",
       {{"start_index", 1, kUint32, kSingular},
        {"decay_factor", 2, kFloat, kSingular}}},
      {"fmaas.DecodingParameters.StringChoices",
       {{"choices", 1, kString, kRepeated}}},
      {"fmaas.TokenInfo",
       {{"text", 2, kString, kSingular},
        {"logprob", 3, kFloat, kSingular},
        {"rank", 4, kUint32, kSingular},
        {"top_tokens", 5, kMessage, kRepeated, "fmaas.TokenInfo.TopToken"}}},
      {"fmaas.TokenInfo.TopToken",
       {{"text", 2, kString, kSingular}, {"logprob", 3, kFloat, kSingular}}},
      {"fmaas.BatchedTokenizeRequest",
       {{"model_id", 1, kString, kSingular},
        {"requests", 2, kMessage, kRepeated, "fmaas.TokenizeRequest"},
        {"return_tokens", 3, kBool, kSingular},
        {"return_offsets", 4, kBool, kSingular},
        {"truncate_input_tokens", 5, kUint32, kSingular},
        {"prefix_id", 6, kString, kOptional},
        {"adapter_id", 7, kString, kOptional}}},
      {"fmaas.TokenizeRequest", {{"text", 1, kString, kSingular}}},
      {"fmaas.BatchedTokenizeResponse",
       {{"responses", 1, kMessage, kRepeated, "fmaas.TokenizeResponse"}}},
      {"fmaas.TokenizeResponse",
       {{"token_count", 1, kUint32, kSingular},
        {"tokens", 2, kString, kRepeated},
        {"offsets", 3, kMessage, kRepeated, "fmaas.TokenizeResponse.Offset"}}},
      {"fmaas.TokenizeResponse.Offset",
       {{"start", 1, kUint32, kSingular}, {"end", 2, kUint32, kSingular}}},
      {"fmaas.ModelInfoRequest", {{"model_id", 1, kString, kSingular}}},
      {"fmaas.ModelInfoResponse",
       {{"model_kind", 1, kEnum, kSingular, "fmaas.ModelInfoResponse.ModelKind"},
        {"max_sequence_length", 2, kUint32, kSingular},
        {"max_new_tokens", 3, kUint32, kSingular}}},
  };
  return *contract;
}

Label LabelOf(const FieldDescriptor& field) {
  if (field.is_repeated()) return kRepeated;
  if (field.has_optional_keyword()) return kOptional;
  if (field.containing_oneof() != nullptr) return kOneof;
  return kSingular;
}

std::string TypeNameOf(const FieldDescriptor& field) {
  if (field.message_type() != nullptr) return field.message_type()->full_name();
  if (field.enum_type() != nullptr) return field.enum_type()->full_name();
  return "";
}

const DescriptorPool& Pool() {
  // Linking generation.pb.cc registers the file in the generated pool.
  fmaas::GenerationRequest::descriptor();
  return *DescriptorPool::generated_pool();
}

TEST(ProtoContract, FileHasPackageFmaasAndNoOptions) {
  const auto* file = Pool().FindFileByName("generation.proto");
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->package(), "fmaas");
  EXPECT_EQ(file->syntax(), google::protobuf::FileDescriptor::SYNTAX_PROTO3);
  EXPECT_EQ(file->dependency_count(), 0);
  EXPECT_EQ(file->options().ByteSizeLong(), 0u);
}

void CollectMessages(const Descriptor& message, std::vector<std::string>* out) {
  out->push_back(message.full_name());
  for (int i = 0; i < message.nested_type_count(); ++i) {
    CollectMessages(*message.nested_type(i), out);
  }
}

TEST(ProtoContract, FileHoldsExactlyTheContractsMessages) {
  const auto* file = Pool().FindFileByName("generation.proto");
  ASSERT_NE(file, nullptr);
  std::vector<std::string> declared;
  for (int i = 0; i < file->message_type_count(); ++i) {
    CollectMessages(*file->message_type(i), &declared);
  }
  std::vector<std::string> expected;
  for (const auto& [name, fields] : Contract()) expected.push_back(name);
  std::sort(declared.begin(), declared.end());
  EXPECT_EQ(declared, expected);
}

TEST(ProtoContract, ServiceMethodsAndStreaming) {
  const auto* service = Pool().FindServiceByName("fmaas.GenerationService");
  ASSERT_NE(service, nullptr);
  ASSERT_EQ(service->method_count(), 4);
  struct MethodSpec {
    std::string name, input, output;
    bool server_streaming;
  };
  const std::vector<MethodSpec> methods = {
      {"Generate", "fmaas.BatchedGenerationRequest",
       "fmaas.BatchedGenerationResponse", false},
      {"GenerateStream", "fmaas.SingleGenerationRequest",
       "fmaas.GenerationResponse", true},
      {"Tokenize", "fmaas.BatchedTokenizeRequest",
       "fmaas.BatchedTokenizeResponse", false},
      {"ModelInfo", "fmaas.ModelInfoRequest", "fmaas.ModelInfoResponse",
       false},
  };
  for (int i = 0; i < 4; ++i) {
    const auto* method = service->method(i);
    SCOPED_TRACE(methods[i].name);
    EXPECT_EQ(method->name(), methods[i].name);
    EXPECT_EQ(method->input_type()->full_name(), methods[i].input);
    EXPECT_EQ(method->output_type()->full_name(), methods[i].output);
    EXPECT_EQ(method->server_streaming(), methods[i].server_streaming);
    EXPECT_FALSE(method->client_streaming());
  }
}

TEST(ProtoContract, EveryFieldNumberTypeAndLabel) {
  for (const auto& [message_name, fields] : Contract()) {
    SCOPED_TRACE(message_name);
    const Descriptor* message = Pool().FindMessageTypeByName(message_name);
    ASSERT_NE(message, nullptr);
    EXPECT_EQ(message->field_count(), static_cast<int>(fields.size()));
    for (const FieldSpec& spec : fields) {
      SCOPED_TRACE(spec.name);
      const FieldDescriptor* field = message->FindFieldByName(spec.name);
      ASSERT_NE(field, nullptr);
      EXPECT_EQ(field->number(), spec.number);
      EXPECT_EQ(field->type(), spec.type);
      EXPECT_EQ(LabelOf(*field), spec.label);
      EXPECT_EQ(TypeNameOf(*field), spec.type_name);
    }
  }
}

TEST(ProtoContract, GuidedIsOneOneofOverFieldsThreeToSeven) {
  const Descriptor* decoding = fmaas::DecodingParameters::descriptor();
  ASSERT_EQ(decoding->real_oneof_decl_count(), 1);
  const auto* guided = decoding->oneof_decl(0);
  EXPECT_EQ(guided->name(), "guided");
  EXPECT_EQ(guided->field_count(), 5);
}

TEST(ProtoContract, EnumValues) {
  const std::map<std::string, std::vector<std::string>> enums = {
      {"fmaas.DecodingMethod", {"GREEDY", "SAMPLE"}},
      {"fmaas.StopReason",
       {"NOT_FINISHED", "MAX_TOKENS", "EOS_TOKEN", "CANCELLED", "TIME_LIMIT",
        "STOP_SEQUENCE", "TOKEN_LIMIT", "ERROR"}},
      {"fmaas.ModelInfoResponse.ModelKind", {"DECODER_ONLY", "ENCODER_DECODER"}},
      {"fmaas.DecodingParameters.ResponseFormat", {"TEXT", "JSON"}},
  };
  for (const auto& [name, values] : enums) {
    SCOPED_TRACE(name);
    const auto* type = Pool().FindEnumTypeByName(name);
    ASSERT_NE(type, nullptr);
    ASSERT_EQ(type->value_count(), static_cast<int>(values.size()));
    for (int number = 0; number < type->value_count(); ++number) {
      const auto* value = type->FindValueByNumber(number);
      ASSERT_NE(value, nullptr) << number;
      EXPECT_EQ(value->name(), values[number]);
    }
  }
}

}  // namespace
}  // namespace fms
