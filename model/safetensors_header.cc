#include "model/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace fms {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::optional<SafetensorsDtype> ParseDtype(const std::string& dtype) {
  static const auto* dtypes = new std::map<std::string, SafetensorsDtype>{
      {"F32", SafetensorsDtype::kF32},  {"F16", SafetensorsDtype::kF16},
      {"BF16", SafetensorsDtype::kBF16}, {"F64", SafetensorsDtype::kF64},
      {"I64", SafetensorsDtype::kI64},  {"I32", SafetensorsDtype::kI32},
      {"I16", SafetensorsDtype::kI16},  {"I8", SafetensorsDtype::kI8},
      {"U8", SafetensorsDtype::kU8},    {"BOOL", SafetensorsDtype::kBool}};
  auto it = dtypes->find(dtype);
  if (it == dtypes->end()) return std::nullopt;
  return it->second;
}

// The tensor's byte count, or nullopt when it does not fit in 64 bits.
std::optional<uint64_t> ByteCount(const std::vector<int64_t>& shape, SafetensorsDtype dtype) {
  unsigned __int128 bytes = static_cast<unsigned>(ElementSize(dtype));
  for (int64_t dim : shape) {
    bytes *= static_cast<uint64_t>(dim);
    if (bytes > std::numeric_limits<uint64_t>::max()) return std::nullopt;
  }
  return static_cast<uint64_t>(bytes);
}

absl::StatusOr<HeaderEntry> ParseEntry(const json& value, uint64_t data_size) {
  if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
      !value.contains("data_offsets") || !value["dtype"].is_string() ||
      !value["shape"].is_array() || !value["data_offsets"].is_array() ||
      value["data_offsets"].size() != 2) {
    return absl::InvalidArgumentError("malformed entry");
  }
  HeaderEntry entry;
  const std::optional<SafetensorsDtype> dtype = ParseDtype(value["dtype"].get<std::string>());
  if (!dtype.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported dtype ", value["dtype"].get<std::string>()));
  }
  entry.dtype = *dtype;
  for (const json& dim : value["shape"]) {
    // Dimensions are int64 in LibTorch: larger ones are damage, not models.
    if (!dim.is_number_unsigned() ||
        dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError("bad shape");
    }
    entry.shape.push_back(dim.get<int64_t>());
  }
  for (const json& offset : value["data_offsets"]) {
    if (!offset.is_number_unsigned()) return absl::InvalidArgumentError("bad data_offsets");
  }
  entry.begin = value["data_offsets"][0].get<uint64_t>();
  entry.end = value["data_offsets"][1].get<uint64_t>();
  if (entry.begin > entry.end || entry.end > data_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data_offsets [", entry.begin, ", ", entry.end, ") outside the data buffer of ",
        data_size, " bytes (truncated file?)"));
  }
  const std::optional<uint64_t> bytes = ByteCount(entry.shape, entry.dtype);
  if (!bytes.has_value() || entry.end - entry.begin != *bytes) {
    return absl::InvalidArgumentError("data_offsets do not match dtype and shape");
  }
  return entry;
}

// Two tensors sharing bytes: a damaged or hand-made file (the safetensors
// format lays tensors out back to back, and its library refuses overlaps).
std::optional<std::string> FindOverlap(const std::map<std::string, HeaderEntry>& entries) {
  std::vector<std::pair<const std::string*, const HeaderEntry*>> by_offset;
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

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string_view("/\0", 2)) == std::string::npos;
}

}  // namespace

int ElementSize(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::kF64:
    case SafetensorsDtype::kI64:
      return 8;
    case SafetensorsDtype::kF32:
    case SafetensorsDtype::kI32:
      return 4;
    case SafetensorsDtype::kF16:
    case SafetensorsDtype::kBF16:
    case SafetensorsDtype::kI16:
      return 2;
    case SafetensorsDtype::kI8:
    case SafetensorsDtype::kU8:
    case SafetensorsDtype::kBool:
      return 1;
  }
  return 1;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view file) {
  if (file.size() < 8) return absl::InvalidArgumentError("too short for a safetensors file");
  uint64_t header_size = 0;
  std::memcpy(&header_size, file.data(), 8);  // Little-endian on every target.
  if (header_size > kMaxHeaderBytes || header_size > file.size() - 8) {
    return absl::InvalidArgumentError(
        "header length exceeds the file (truncated or not safetensors)");
  }
  const std::string_view header = file.substr(8, header_size);
  json j = json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("header is not a JSON object");
  }
  SafetensorsHeader parsed{.data_offset = 8 + header_size};
  const uint64_t data_size = file.size() - parsed.data_offset;
  for (const auto& [name, value] : j.items()) {
    if (name == "__metadata__") continue;
    auto entry = ParseEntry(value, data_size);
    if (!entry.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': ", entry.status().message()));
    }
    parsed.entries.emplace(name, *std::move(entry));
  }
  if (auto overlap = FindOverlap(parsed.entries); overlap.has_value()) {
    return absl::InvalidArgumentError(*overlap);
  }
  return parsed;
}

absl::StatusOr<std::map<std::string, std::string>> ParseSafetensorsIndex(std::string_view text) {
  json index = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
      !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError("no 'weight_map' object");
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string() || !IsPlainFileName(file.get<std::string>())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weight_map entry '", name, "' is not a file name in the model directory"));
    }
    weight_map[name] = file.get<std::string>();
  }
  return weight_map;
}

}  // namespace fms
