// The tokenizers of the test models (tools/make_test_models.py), for fuzz
// targets: "bytebpe" (tokenizer.json, byte-level BPE, through the tokenizers
// crate) and "mha" (tokenizer.model, SentencePiece with byte fallback).
// FMS_TEST_MODELS names their folder (tools/test and tools/fuzz set it);
// without it the process says so and exits 0, as the C++ tests skip.

#ifndef FMS_TESTS_FUZZ_TEST_TOKENIZERS_H_
#define FMS_TESTS_FUZZ_TEST_TOKENIZERS_H_

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "server/tokenizer.h"

namespace fms {

// Loads the test model `name`'s tokenizer; aborts when it fails to load.
inline std::unique_ptr<Tokenizer> LoadTestTokenizer(const std::string& name) {
  const char* models = std::getenv("FMS_TEST_MODELS");
  if (models == nullptr) {
    std::fprintf(stderr, "FMS_TEST_MODELS unset (run tools/test or tools/fuzz): skipped\n");
    std::exit(0);
  }
  auto tokenizer = LoadTokenizer(std::string(models) + "/" + name);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    std::abort();
  }
  return *std::move(tokenizer);
}

}  // namespace fms

#endif  // FMS_TESTS_FUZZ_TEST_TOKENIZERS_H_
