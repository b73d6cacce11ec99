// Fuzzes what the front end does with a request before it reaches the
// batcher: parameter resolution and validation (server/validation.h), then
// per input tokenization, truncation and length checks (GenerationRun::Create)
// and Tokenize's encoding. Input: one byte choosing the message
// (BatchedGenerationRequest, SingleGenerationRequest, BatchedTokenizeRequest),
// then its wire bytes. Oracle: a refusal is INVALID_ARGUMENT with a message;
// an accepted request is one the scheduler and the model can run.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "proto/generation.pb.h"
#include "server/generation_run.h"
#include "server/validation.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/test_tokenizers.h"

namespace fms {
namespace {

constexpr int kMaxInputs = 8;  // Inputs looked at per request.
const ValidationLimits kLimits{.max_new_tokens = 1024, .max_sequence_length = 256};

const Tokenizer* tokenizer = nullptr;

void CheckRefusal(const absl::Status& status) {
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, "not INVALID_ARGUMENT");
  FUZZ_CHECK(!status.message().empty(), "a refusal without a message");
}

void CheckRun(const GenerationRun& run, const ResolvedParams& params) {
  const Request& r = run.request();
  FUZZ_CHECK(!r.prompt.empty(), "an empty prompt was accepted");
  FUZZ_CHECK(r.prompt.size() < kLimits.max_sequence_length, "prompt at the length limit");
  for (int32_t id : r.prompt) {
    FUZZ_CHECK(id >= 0 && id < tokenizer->vocab_size(), "a prompt id outside the vocabulary");
  }
  const StoppingCriteria& s = r.stopping;
  FUZZ_CHECK(s.max_new_tokens >= 1, "nothing to generate");
  FUZZ_CHECK(s.min_new_tokens <= s.max_new_tokens, "min above max");
  FUZZ_CHECK(r.prompt.size() + s.max_new_tokens <= kLimits.max_sequence_length,
             "prompt + max_new_tokens beyond the limit");
  const SamplingParams& p = r.sampling;
  FUZZ_CHECK(p.top_k >= 0 && p.top_p > 0 && p.top_p <= 1 && p.typical_p <= 1, "bad warpers");
  FUZZ_CHECK(p.repetition_penalty > 0, "repetition_penalty <= 0");
  FUZZ_CHECK(!p.sample || p.temperature >= 0.05f, "a sampling temperature below 0.05");
  FUZZ_CHECK(params.stop_sequences.size() <= 6, "more than 6 stop sequences");
  for (const std::string& stop : params.stop_sequences) {
    FUZZ_CHECK(!stop.empty() && stop.size() <= 240, "a bad stop sequence");
  }
  run.FirstMessage();
}

void Generate(const fmaas::Parameters* params, const std::vector<const std::string*>& texts) {
  auto resolved = ResolveParameters(params, kLimits);
  if (!resolved.ok()) return CheckRefusal(resolved.status());
  const RunContext context{.tokenizer = tokenizer,
                           .max_sequence_length = kLimits.max_sequence_length,
                           .eos_token_ids = {tokenizer->eos_id()}};
  for (const std::string* text : texts) {
    auto run = GenerationRun::Create(*text, *resolved, context, /*random_seed=*/7);
    if (!run.ok()) return CheckRefusal(run.status());
    CheckRun(**run, *resolved);
  }
}

void Tokenize(const fmaas::BatchedTokenizeRequest& request) {
  for (int i = 0; i < request.requests_size() && i < kMaxInputs; ++i) {
    const std::string& text = request.requests(i).text();
    const uint32_t truncate = request.truncate_input_tokens();
    auto prompt = EncodePrompt(*tokenizer, text, truncate);
    FUZZ_CHECK(prompt.ok(), "Tokenize failed on a string");
    const Encoding& e = prompt->encoding;
    FUZZ_CHECK(e.begins.size() == e.ids.size() && e.ends.size() == e.ids.size(),
               "offsets and ids differ in count");
    FUZZ_CHECK(truncate == 0 || e.ids.size() <= truncate, "truncation kept too many");
    for (size_t k = 0; k < e.ids.size(); ++k) {
      FUZZ_CHECK(e.ids[k] >= 0 && e.ids[k] < tokenizer->vocab_size(), "an id outside");
      FUZZ_CHECK(e.begins[k] <= e.ends[k] && e.ends[k] <= text.size(), "an offset outside");
      tokenizer->IdToPiece(e.ids[k]);
    }
  }
}

std::vector<const std::string*> Texts(const fmaas::BatchedGenerationRequest& request) {
  std::vector<const std::string*> texts;
  for (int i = 0; i < request.requests_size() && i < kMaxInputs; ++i) {
    texts.push_back(&request.requests(i).text());
  }
  return texts;
}

}  // namespace
}  // namespace fms

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static const auto* loaded = fms::LoadTestTokenizer("bytebpe").release();
  fms::tokenizer = loaded;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const void* wire = data + 1;
  const int wire_size = static_cast<int>(size - 1);
  switch (data[0] % 3) {
    case 0: {
      fmaas::BatchedGenerationRequest request;
      if (!request.ParseFromArray(wire, wire_size)) return 0;
      fms::Generate(request.has_params() ? &request.params() : nullptr, fms::Texts(request));
      break;
    }
    case 1: {
      fmaas::SingleGenerationRequest request;
      if (!request.ParseFromArray(wire, wire_size) || !request.has_request()) return 0;
      fms::Generate(request.has_params() ? &request.params() : nullptr,
                    {&request.request().text()});
      break;
    }
    default: {
      fmaas::BatchedTokenizeRequest request;
      if (!request.ParseFromArray(wire, wire_size)) return 0;
      fms::Tokenize(request);
    }
  }
  return 0;
}
