#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace fms {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

absl::StatusOr<at::ScalarType> ParseDtype(const std::string& dtype) {
  static const auto* dtypes = new std::map<std::string, at::ScalarType>{
      {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"F64", at::kDouble}, {"I64", at::kLong}, {"I32", at::kInt},
      {"I16", at::kShort}, {"I8", at::kChar},   {"U8", at::kByte},
      {"BOOL", at::kBool}};
  auto it = dtypes->find(dtype);
  if (it == dtypes->end()) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", dtype));
  }
  return it->second;
}

absl::StatusOr<TensorEntry> ParseEntry(const json& value, uint64_t data_size) {
  if (!value.is_object() || !value.contains("dtype") ||
      !value.contains("shape") || !value.contains("data_offsets") ||
      !value["dtype"].is_string() || !value["shape"].is_array() ||
      !value["data_offsets"].is_array() || value["data_offsets"].size() != 2) {
    return absl::InvalidArgumentError("malformed entry");
  }
  TensorEntry entry;
  auto dtype = ParseDtype(value["dtype"].get<std::string>());
  if (!dtype.ok()) return dtype.status();
  entry.dtype = *dtype;
  uint64_t numel = 1;
  for (const json& dim : value["shape"]) {
    if (!dim.is_number_unsigned()) return absl::InvalidArgumentError("bad shape");
    entry.shape.push_back(dim.get<int64_t>());
    numel *= dim.get<uint64_t>();
  }
  for (const json& offset : value["data_offsets"]) {
    if (!offset.is_number_unsigned()) {
      return absl::InvalidArgumentError("bad data_offsets");
    }
  }
  entry.begin = value["data_offsets"][0].get<uint64_t>();
  entry.end = value["data_offsets"][1].get<uint64_t>();
  if (entry.begin > entry.end || entry.end > data_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data_offsets [", entry.begin, ", ", entry.end,
        ") outside the data buffer of ", data_size, " bytes (truncated file?)"));
  }
  if (entry.end - entry.begin != numel * at::elementSize(entry.dtype)) {
    return absl::InvalidArgumentError("data_offsets do not match dtype and shape");
  }
  return entry;
}

absl::StatusOr<std::string> ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The files named by model.safetensors.index.json, with the tensors each holds.
absl::StatusOr<std::map<std::string, std::string>> ReadIndex(
    const fs::path& index_path) {
  auto text = ReadText(index_path);
  if (!text.ok()) return text.status();
  json index = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.contains("weight_map") ||
      !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path.string(), ": no 'weight_map' object"));
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path.string(), ": weight_map entry '", name, "' is not a file name"));
    }
    weight_map[name] = file.get<std::string>();
  }
  return weight_map;
}

std::vector<std::string> CheckpointFiles(const fs::path& dir) {
  if (fs::exists(dir / "model.safetensors")) return {"model.safetensors"};
  std::vector<std::string> files;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() == ".safetensors" &&
        name != "consolidated.safetensors") {
      files.push_back(name);
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Two tensors sharing bytes: a damaged or hand-made file (the safetensors
// format lays tensors out back to back, and its library refuses overlaps).
template <typename Entries>
std::optional<std::string> FindOverlap(const Entries& entries) {
  std::vector<std::pair<const std::string*, const TensorEntry*>> by_offset;
  for (const auto& [name, entry] : entries) {
    if (entry.end > entry.begin) by_offset.push_back({&name, &entry});
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto& [previous, before] = by_offset[i - 1];
    const auto& [name, entry] = by_offset[i];
    if (entry->begin < before->end) {
      return absl::StrCat("tensors '", *previous, "' [", before->begin, ", ", before->end,
                          ") and '", *name, "' [", entry->begin, ", ", entry->end,
                          ") overlap (damaged file?)");
    }
  }
  return std::nullopt;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  auto fail = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  struct stat st {};
  const bool stat_ok = ::fstat(fd, &st) == 0;
  const size_t size = stat_ok ? static_cast<size_t>(st.st_size) : 0;
  void* mapping = size >= 8 ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0)
                            : MAP_FAILED;
  ::close(fd);
  if (mapping == MAP_FAILED) return fail("too short or unmappable");
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile);
  file->path_ = path;
  file->mapping_ = mapping;
  file->mapping_size_ = size;
  file->self_ = file;
  uint64_t header_size = 0;
  std::memcpy(&header_size, mapping, 8);  // Little-endian on every target.
  if (header_size > kMaxHeaderBytes || 8 + header_size > size) {
    return fail("header length exceeds the file (truncated or not safetensors)");
  }
  const char* header = static_cast<const char*>(mapping) + 8;
  json j = json::parse(header, header + header_size, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail("header is not a JSON object");
  file->data_ = static_cast<const uint8_t*>(mapping) + 8 + header_size;
  const uint64_t data_size = size - 8 - header_size;
  for (const auto& [name, value] : j.items()) {
    if (name == "__metadata__") continue;
    auto entry = ParseEntry(value, data_size);
    if (!entry.ok()) {
      return fail(absl::StrCat("tensor '", name, "': ", entry.status().message()));
    }
    file->entries_.emplace(name, *std::move(entry));
  }
  if (auto overlap = FindOverlap(file->entries_); overlap.has_value()) return fail(*overlap);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

at::Tensor SafetensorsFile::View(const std::string& name) const {
  const TensorEntry& entry = entries_.at(name);
  auto keep_alive = self_.lock();
  // The mapping is read-only: callers copy (Checkpoint::Read), never write.
  void* data = const_cast<uint8_t*>(data_ + entry.begin);
  return at::from_blob(data, entry.shape,
                       [keep_alive](void*) mutable { keep_alive.reset(); },
                       at::TensorOptions().dtype(entry.dtype));
}

absl::StatusOr<Checkpoint> Checkpoint::Open(const std::string& model_dir) {
  const fs::path dir(model_dir);
  const fs::path index_path = dir / "model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> files;
  if (fs::exists(index_path)) {
    auto index = ReadIndex(index_path);
    if (!index.ok()) return index.status();
    weight_map = *std::move(index);
    for (const auto& [name, file] : weight_map) files.push_back(file);
    std::sort(files.begin(), files.end());
    files.erase(std::unique(files.begin(), files.end()), files.end());
  } else {
    files = CheckpointFiles(dir);
  }
  if (files.empty()) {
    return absl::NotFoundError(absl::StrCat(model_dir, ": no *.safetensors files"));
  }
  Checkpoint checkpoint;
  checkpoint.model_dir_ = model_dir;
  for (const std::string& name : files) {
    auto file = SafetensorsFile::Open((dir / name).string());
    if (!file.ok()) return file.status();
    for (const auto& [tensor, entry] : (*file)->entries()) {
      if (!checkpoint.file_of_.emplace(tensor, *file).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", tensor, "' appears in two files, the second ", name));
      }
    }
  }
  for (const auto& [tensor, file] : weight_map) {
    auto it = checkpoint.file_of_.find(tensor);
    if (it == checkpoint.file_of_.end() ||
        fs::path(it->second->path()).filename() != file) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path.string(), ": tensor '", tensor, "' is not in ", file));
    }
  }
  return checkpoint;
}

bool Checkpoint::Contains(const std::string& name) const {
  return file_of_.count(name) > 0;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, file] : file_of_) names.push_back(name);
  return names;
}

absl::StatusOr<at::Tensor> Checkpoint::Read(
    const std::string& name, const std::vector<int64_t>& expected_shape,
    at::ScalarType dtype, const TensorSlice& slice) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end()) {
    return absl::NotFoundError(
        absl::StrCat(model_dir_, ": missing tensor '", name, "'"));
  }
  const TensorEntry& entry = it->second->entries().at(name);
  if (entry.shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        it->second->path(), ": tensor '", name, "' has shape ",
        ShapeString(entry.shape), ", expected ", ShapeString(expected_shape)));
  }
  at::Tensor view = it->second->View(name);
  if (slice.length >= 0) view = view.narrow(slice.dim, slice.begin, slice.length);
  return view.to(dtype, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

}  // namespace fms
