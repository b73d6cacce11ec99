// The safetensors header and model.safetensors.index.json, parsed without
// LibTorch (safetensors.h maps the files and makes tensors of them; the fuzz
// target tests/fuzz/safetensors_fuzz.cc drives these parsers directly).
//
// Format: 8-byte little-endian header length N, N bytes of JSON mapping names
// to {dtype, shape, data_offsets: [begin, end)} relative to the data buffer
// that starts at 8 + N. Every entry is checked against the real file size;
// byte counts are computed without overflow; tensors may not share bytes.

#ifndef FMS_MODEL_SAFETENSORS_HEADER_H_
#define FMS_MODEL_SAFETENSORS_HEADER_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fms {

// The element types of the format that fms-serve reads.
enum class SafetensorsDtype { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
int ElementSize(SafetensorsDtype dtype);

struct HeaderEntry {
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // Every dimension in [0, 2^63).
  uint64_t begin = 0;          // Offsets into the data buffer; end <= its size.
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;  // 8 + N: where the data buffer starts in the file.
  std::map<std::string, HeaderEntry> entries;  // "__metadata__" left out.
};

// Parses the header of a whole file's bytes (a mapping of it). Errors name
// the cause, not the file: the caller prefixes the path.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view file);

// model.safetensors.index.json: tensor name -> the file that holds it. Every
// file is a plain name inside the model directory (no '/', not "." or "..").
absl::StatusOr<std::map<std::string, std::string>> ParseSafetensorsIndex(std::string_view text);

}  // namespace fms

#endif  // FMS_MODEL_SAFETENSORS_HEADER_H_
