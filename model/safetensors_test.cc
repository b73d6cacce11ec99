#include "model/safetensors.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fms {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A fresh directory under the test's temp dir.
fs::path NewDir(const std::string& name) {
  const fs::path dir = fs::path(std::getenv("TEST_TMPDIR")) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

struct Tensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::string Bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(float));
}

// Writes a safetensors file the way the reference writer lays it out.
void Write(const fs::path& path, const std::vector<Tensor>& tensors,
           size_t truncate_by = 0, const std::string& header_override = "") {
  json header = {{"__metadata__", {{"format", "pt"}}}};
  std::string data;
  for (const Tensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string text = header_override.empty() ? header.dump() : header_override;
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();
  std::string file(reinterpret_cast<const char*>(&n), 8);
  file += text + data;
  file.resize(file.size() - truncate_by);
  std::ofstream(path, std::ios::binary) << file;
}

TEST(Safetensors, ReadsAndConvertsDtypes) {
  const fs::path dir = NewDir("convert");
  const at::Tensor bf16 = at::tensor({1.5f, -2.0f}).to(at::kBFloat16);
  Write(dir / "model.safetensors",
        {{"a", "F32", {2, 2}, Bytes({1, 2, 3, 4})},
         {"b", "BF16", {2}, std::string(static_cast<const char*>(bf16.data_ptr()), 4)}});
  auto checkpoint = Checkpoint::Open(dir.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->Names(), (std::vector<std::string>{"a", "b"}));
  auto a = checkpoint->Read("a", {2, 2}, at::kBFloat16);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(a->to(at::kFloat), at::tensor({1.f, 2.f, 3.f, 4.f}).view({2, 2})));
  auto b = checkpoint->Read("b", {2}, at::kFloat);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(at::equal(*b, at::tensor({1.5f, -2.0f})));
}

TEST(Safetensors, ReadTensorsOwnTheirMemory) {
  const fs::path dir = NewDir("owned");
  Write(dir / "model.safetensors", {{"a", "F32", {1}, Bytes({7})}});
  at::Tensor a;
  {
    auto checkpoint = Checkpoint::Open(dir.string());
    ASSERT_TRUE(checkpoint.ok());
    a = *checkpoint->Read("a", {1}, at::kFloat);
  }
  fs::remove_all(dir);
  a.add_(1);  // Writable and alive after the file is gone.
  EXPECT_EQ(a.item<float>(), 8.f);
}

TEST(Safetensors, ReadsRowAndColumnSlices) {
  const fs::path dir = NewDir("slices");
  Write(dir / "model.safetensors", {{"w", "F32", {3, 4}, Bytes({0, 1, 2, 3,  //
                                                                4, 5, 6, 7,  //
                                                                8, 9, 10, 11})}});
  auto checkpoint = Checkpoint::Open(dir.string());
  ASSERT_TRUE(checkpoint.ok());
  auto rows = checkpoint->Read("w", {3, 4}, at::kFloat, {.dim = 0, .begin = 1, .length = 2});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(at::equal(*rows, at::arange(4, 12, at::kFloat).view({2, 4})));
  auto cols = checkpoint->Read("w", {3, 4}, at::kBFloat16, {.dim = 1, .begin = 2, .length = 2});
  ASSERT_TRUE(cols.ok()) << cols.status();
  EXPECT_TRUE(cols->is_contiguous());
  EXPECT_TRUE(at::equal(cols->to(at::kFloat), at::tensor({2.f, 3.f, 6.f, 7.f, 10.f, 11.f})
                                                  .view({3, 2})));
  // The expected shape is the whole tensor's, checked before slicing.
  EXPECT_FALSE(checkpoint->Read("w", {2, 4}, at::kFloat, {.dim = 0, .length = 2}).ok());
}

TEST(Safetensors, ShapeMismatchAndMissingTensorNameFileAndTensor) {
  const fs::path dir = NewDir("mismatch");
  Write(dir / "model.safetensors", {{"w", "F32", {2, 2}, Bytes({1, 2, 3, 4})}});
  auto checkpoint = Checkpoint::Open(dir.string());
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_EQ(checkpoint->Read("w", {4}, at::kFloat).status().message(),
            (dir / "model.safetensors").string() +
                ": tensor 'w' has shape [2, 2], expected [4]");
  EXPECT_EQ(checkpoint->Read("lm_head.weight", {4}, at::kFloat).status().message(),
            dir.string() + ": missing tensor 'lm_head.weight'");
}

TEST(Safetensors, CorruptFilesAreErrorsNotCrashes) {
  const std::vector<Tensor> tensors = {{"w", "F32", {4}, Bytes({1, 2, 3, 4})}};
  struct Case {
    std::string name;
    size_t truncate_by;
    std::string header;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"truncated_data", 4, "", "outside the data buffer"},
      {"truncated_header", 30, "", "header length exceeds the file"},
      {"not_json", 0, "{\"w\": [", "header is not a JSON object"},
      {"bad_dtype", 0, R"({"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}})",
       "tensor 'w': unsupported dtype Q4"},
      {"size_mismatch", 0, R"({"w": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}})",
       "do not match dtype and shape"},
      {"malformed", 0, R"({"w": {"dtype": "F32"}})", "tensor 'w': malformed entry"},
      {"overlap", 0,
       R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
       "tensors 'a' [0, 16) and 'b' [8, 16) overlap"},
      // Shapes whose byte count wrapped to 0 or whose dimension turned
      // negative as int64 passed before (tests/fuzz/safetensors_fuzz).
      {"shape_overflow", 0,
       R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})",
       "do not match dtype and shape"},
      {"dim_beyond_int64", 0,
       R"({"w": {"dtype": "U8", "shape": [9223372036854775809, 0], "data_offsets": [0, 0]}})",
       "tensor 'w': bad shape"},
  };
  for (const Case& c : cases) {
    const fs::path dir = NewDir(c.name);
    Write(dir / "model.safetensors", tensors, c.truncate_by, c.header);
    auto checkpoint = Checkpoint::Open(dir.string());
    ASSERT_FALSE(checkpoint.ok()) << c.name;
    EXPECT_NE(checkpoint.status().message().find(c.message), std::string::npos)
        << c.name << ": " << checkpoint.status().message();
  }
  const fs::path empty = NewDir("empty_file");
  std::ofstream(empty / "model.safetensors") << "";
  EXPECT_FALSE(Checkpoint::Open(empty.string()).ok());
  EXPECT_FALSE(Checkpoint::Open(NewDir("no_files").string()).ok());
}

TEST(Safetensors, ShardedCheckpointThroughTheIndex) {
  const fs::path dir = NewDir("sharded");
  Write(dir / "model-00001-of-00002.safetensors", {{"a", "F32", {1}, Bytes({1})}});
  Write(dir / "model-00002-of-00002.safetensors", {{"b", "F32", {1}, Bytes({2})}});
  Write(dir / "stray.safetensors", {{"c", "F32", {1}, Bytes({3})}});
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"metadata": {}, "weight_map": {
             "a": "model-00001-of-00002.safetensors",
             "b": "model-00002-of-00002.safetensors"}})";
  auto checkpoint = Checkpoint::Open(dir.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->Names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(checkpoint->Read("b", {1}, at::kFloat)->item<float>(), 2.f);

  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map": {"a": "model-00002-of-00002.safetensors"}})";
  EXPECT_NE(Checkpoint::Open(dir.string()).status().message().find(
                "tensor 'a' is not in model-00002-of-00002.safetensors"),
            std::string::npos);

  // The index may not send the loader outside the model directory.
  for (const char* file : {"../model-00001-of-00002.safetensors", "/etc/passwd", ".."}) {
    std::ofstream(dir / "model.safetensors.index.json")
        << json{{"weight_map", {{"a", file}}}}.dump();
    EXPECT_NE(Checkpoint::Open(dir.string()).status().message().find(
                  "weight_map entry 'a' is not a file name in the model directory"),
              std::string::npos)
        << file;
  }
}

TEST(Safetensors, DuplicateTensorsAcrossFilesAreRejected) {
  const fs::path dir = NewDir("duplicates");
  Write(dir / "a.safetensors", {{"w", "F32", {1}, Bytes({1})}});
  Write(dir / "b.safetensors", {{"w", "F32", {1}, Bytes({2})}});
  EXPECT_NE(Checkpoint::Open(dir.string()).status().message().find(
                "tensor 'w' appears in two files"),
            std::string::npos);
}

}  // namespace
}  // namespace fms
