// The SentencePiece shim: see spm_shim.h for why it exists.

#include "server/spm_shim.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

struct FmsSpm {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

void WriteError(const std::string& message, char* err, size_t err_len) {
  if (err == nullptr || err_len == 0) return;
  const size_t n = std::min(message.size(), err_len - 1);
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

bool InRange(const FmsSpm* spm, int32_t id) {
  return id >= 0 && id < spm->processor.GetPieceSize();
}

}  // namespace

extern "C" {

FmsSpm* fms_spm_load(const char* path, char* err, size_t err_len) {
  auto* spm = new FmsSpm;
  const auto status = spm->processor.Load(path);
  if (!status.ok()) {
    WriteError(status.ToString(), err, err_len);
    delete spm;
    return nullptr;
  }
  return spm;
}

void fms_spm_free(FmsSpm* spm) { delete spm; }

int32_t fms_spm_vocab_size(const FmsSpm* spm) {
  return spm->processor.GetPieceSize();
}
int32_t fms_spm_bos_id(const FmsSpm* spm) { return spm->processor.bos_id(); }
int32_t fms_spm_eos_id(const FmsSpm* spm) { return spm->processor.eos_id(); }
int32_t fms_spm_unk_id(const FmsSpm* spm) { return spm->processor.unk_id(); }
int32_t fms_spm_pad_id(const FmsSpm* spm) { return spm->processor.pad_id(); }

int32_t fms_spm_is_control(const FmsSpm* spm, int32_t id) {
  return InRange(spm, id) && spm->processor.IsControl(id) ? 1 : 0;
}

int32_t fms_spm_is_byte(const FmsSpm* spm, int32_t id) {
  return InRange(spm, id) && spm->processor.IsByte(id) ? 1 : 0;
}

const char* fms_spm_id_to_piece(const FmsSpm* spm, int32_t id, size_t* len) {
  if (!InRange(spm, id)) {
    *len = 0;
    return "";
  }
  const std::string& piece = spm->processor.IdToPiece(id);
  *len = piece.size();
  return piece.data();
}

int64_t fms_spm_encode(const FmsSpm* spm, const char* text, size_t len,
                       int32_t* ids, uint32_t* begins, uint32_t* ends,
                       int64_t cap) {
  const auto spt =
      spm->processor.EncodeAsImmutableProto(std::string(text, len));
  const auto pieces = spt.pieces();
  const int64_t n = static_cast<int64_t>(pieces.size());
  for (int64_t i = 0; i < std::min(n, cap); ++i) {
    ids[i] = static_cast<int32_t>(pieces[i].id());
    if (begins != nullptr) begins[i] = pieces[i].begin();
    if (ends != nullptr) ends[i] = pieces[i].end();
  }
  return n;
}

int64_t fms_spm_decode(const FmsSpm* spm, const int32_t* ids, int64_t n,
                       char* out, int64_t cap) {
  std::vector<int> id_vector(ids, ids + n);
  for (int id : id_vector) {
    if (!InRange(spm, id)) return -1;
  }
  std::string text;
  if (!spm->processor.Decode(id_vector, &text).ok()) return -1;
  const int64_t size = static_cast<int64_t>(text.size());
  if (out != nullptr) std::memcpy(out, text.data(), std::min(size, cap));
  return size;
}

}  // extern "C"
