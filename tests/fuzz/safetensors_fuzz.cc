// Fuzzes the safetensors header parser and the index parser
// (model/safetensors_header.h) with the same bytes: a whole file for the
// first, model.safetensors.index.json text for the second. Oracle: an
// accepted header describes tensors that lie inside the file, each exactly as
// long as its dtype and shape say, none sharing bytes; an accepted index names
// only plain files inside the model directory.

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "model/safetensors_header.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

void CheckHeader(std::string_view file) {
  auto header = fms::ParseSafetensorsHeader(file);
  if (!header.ok()) {
    FUZZ_CHECK(!header.status().message().empty(), "an error without a message");
    return;
  }
  FUZZ_CHECK(header->data_offset >= 8 && header->data_offset <= file.size(),
             "the data buffer starts outside the file");
  const uint64_t data_size = file.size() - header->data_offset;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header->entries) {
    FUZZ_CHECK(name != "__metadata__", "metadata taken for a tensor");
    FUZZ_CHECK(entry.begin <= entry.end && entry.end <= data_size, "bytes outside the buffer");
    // dtype size x shape, saturating above the buffer (a zero dimension
    // anywhere makes it 0).
    const bool empty = std::find(entry.shape.begin(), entry.shape.end(), 0) != entry.shape.end();
    unsigned __int128 bytes = empty ? 0 : static_cast<unsigned>(fms::ElementSize(entry.dtype));
    for (int64_t dim : entry.shape) {
      FUZZ_CHECK(dim >= 0, "a negative dimension");
      bytes = std::min<unsigned __int128>(bytes * static_cast<uint64_t>(dim),
                                          static_cast<unsigned __int128>(data_size) + 1);
    }
    FUZZ_CHECK(bytes == entry.end - entry.begin, "byte count differs from dtype x shape");
    if (entry.end > entry.begin) ranges.emplace_back(entry.begin, entry.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    FUZZ_CHECK(ranges[i].first >= ranges[i - 1].second, "two tensors share bytes");
  }
}

void CheckIndex(std::string_view text) {
  auto index = fms::ParseSafetensorsIndex(text);
  if (!index.ok()) return;
  for (const auto& [tensor, file] : *index) {
    FUZZ_CHECK(!file.empty() && file != "." && file != "..", "not a file name");
    FUZZ_CHECK(file.find('/') == std::string::npos, "a path outside the model directory");
    FUZZ_CHECK(file.find('\0') == std::string::npos, "a NUL in a file name");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  CheckHeader(bytes);
  CheckIndex(bytes);
  return 0;
}
