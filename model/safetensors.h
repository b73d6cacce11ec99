// Reading Hugging Face safetensors checkpoints: one file, or several named by
// model.safetensors.index.json. Files are memory-mapped; each tensor is
// validated against the file's size and converted on read, one tensor at a
// time, so loading never holds a second full copy of the checkpoint. The
// header and the index are parsed and checked by safetensors_header.h.

#ifndef FMS_MODEL_SAFETENSORS_H_
#define FMS_MODEL_SAFETENSORS_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/weight_source.h"

namespace fms {

// Where one tensor lives in a mapped file.
struct TensorEntry {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // Offsets into the data buffer.
  uint64_t end = 0;
};

// One memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  // Maps `path` and validates its header: every entry's dtype, shape and
  // offsets, against the real file size (a truncated file is an error).
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(
      const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorEntry>& entries() const { return entries_; }

  // A read-only CPU tensor over the mapped bytes; it keeps the file mapped.
  // `name` must be one of entries().
  at::Tensor View(const std::string& name) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  const uint8_t* data_ = nullptr;  // Start of the data buffer.
  std::map<std::string, TensorEntry> entries_;
  std::weak_ptr<SafetensorsFile> self_;
};

// All safetensors files of a model directory.
class Checkpoint : public WeightSource {
 public:
  // Uses model.safetensors.index.json when present, else model.safetensors,
  // else every *.safetensors file in `model_dir`.
  static absl::StatusOr<Checkpoint> Open(const std::string& model_dir);

  bool Contains(const std::string& name) const;
  std::vector<std::string> Names() const;

  // Reads tensor `name`, or only `slice` of it, as an owned contiguous
  // tensor of `dtype`; only the slice's bytes are copied from the mapping.
  // Fails, naming the file and the tensor, when it is missing or its shape is
  // not `expected_shape` (the whole tensor's).
  absl::StatusOr<at::Tensor> Read(const std::string& name,
                                  const std::vector<int64_t>& expected_shape,
                                  at::ScalarType dtype,
                                  const TensorSlice& slice = {}) const override;

 private:
  std::string model_dir_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> file_of_;
};

}  // namespace fms

#endif  // FMS_MODEL_SAFETENSORS_H_
