// Runs fms-server's tokenizer of a model directory over JSON lines, for the
// tokenizer parity tests (tests/tokenizer_parity_test.py):
//
//   tokenizer_probe MODEL_DIR < in.jsonl > out.jsonl
//
// Each input line is a JSON string; each output line is
//   {"ids": [...], "tokens": [...], "begins": [...], "ends": [...],
//    "decoded": decode(ids, skip_special_tokens=false),
//    "decoded_skip": decode(ids, skip_special_tokens=true)}
// with the ids of Encode(text, add_special_tokens=true) and UTF-8 byte offsets.

#include <cstdio>
#include <iostream>
#include <string>

#include "nlohmann/json.hpp"
#include "server/tokenizer.h"

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "tokenizer_probe: %s\n", std::string(status.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tokenizer_probe MODEL_DIR < in.jsonl > out.jsonl\n");
    return 2;
  }
  auto tokenizer = fms::LoadTokenizer(argv[1]);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::string line;
  while (std::getline(std::cin, line)) {
    const std::string text = nlohmann::json::parse(line).get<std::string>();
    auto encoding = (*tokenizer)->Encode(text, /*add_special_tokens=*/true);
    if (!encoding.ok()) return Fail(encoding.status());
    auto decoded = (*tokenizer)->Decode(encoding->ids, /*skip_special_tokens=*/false);
    if (!decoded.ok()) return Fail(decoded.status());
    auto decoded_skip = (*tokenizer)->Decode(encoding->ids, /*skip_special_tokens=*/true);
    if (!decoded_skip.ok()) return Fail(decoded_skip.status());
    nlohmann::json tokens = nlohmann::json::array();
    for (int32_t id : encoding->ids) tokens.push_back(std::string((*tokenizer)->IdToPiece(id)));
    const nlohmann::json out = {{"ids", encoding->ids},         {"tokens", tokens},
                                {"begins", encoding->begins},   {"ends", encoding->ends},
                                {"decoded", *decoded},          {"decoded_skip", *decoded_skip}};
    std::cout << out.dump() << "\n";  // Throws on invalid UTF-8.
  }
  return 0;
}
