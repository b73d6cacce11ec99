#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/safetensors_header.h"

namespace fms {
namespace {

namespace fs = std::filesystem;

at::ScalarType ToScalarType(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::kF32: return at::kFloat;
    case SafetensorsDtype::kF16: return at::kHalf;
    case SafetensorsDtype::kBF16: return at::kBFloat16;
    case SafetensorsDtype::kF64: return at::kDouble;
    case SafetensorsDtype::kI64: return at::kLong;
    case SafetensorsDtype::kI32: return at::kInt;
    case SafetensorsDtype::kI16: return at::kShort;
    case SafetensorsDtype::kI8: return at::kChar;
    case SafetensorsDtype::kU8: return at::kByte;
    case SafetensorsDtype::kBool: return at::kBool;
  }
  return at::kByte;
}

absl::StatusOr<std::string> ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The files named by model.safetensors.index.json, with the tensors each holds.
absl::StatusOr<std::map<std::string, std::string>> ReadIndex(const fs::path& index_path) {
  auto text = ReadText(index_path);
  if (!text.ok()) return text.status();
  auto weight_map = ParseSafetensorsIndex(*text);
  if (!weight_map.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path.string(), ": ", weight_map.status().message()));
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
  auto header = ParseSafetensorsHeader(
      std::string_view(static_cast<const char*>(mapping), size));
  if (!header.ok()) return fail(header.status().message());
  file->data_ = static_cast<const uint8_t*>(mapping) + header->data_offset;
  for (auto& [name, entry] : header->entries) {
    file->entries_.emplace(name, TensorEntry{.dtype = ToScalarType(entry.dtype),
                                             .shape = std::move(entry.shape),
                                             .begin = entry.begin,
                                             .end = entry.end});
  }
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
