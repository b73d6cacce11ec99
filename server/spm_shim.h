// C ABI of the SentencePiece shim library (libfms_spm_shim.so).
//
// Debian's libsentencepiece carries its own protobuf 3.14 and exports FLAGS_*
// symbols; loaded next to libprotobuf 3.21 (gRPC) or LibTorch's libc10 it aborts
// or corrupts flags. The shim is therefore the only thing that links it, and it
// is opened with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by Tokenizer. Only plain C
// types cross this boundary.

#ifndef FMS_SERVER_SPM_SHIM_H_
#define FMS_SERVER_SPM_SHIM_H_

#include <stddef.h>
#include <stdint.h>

extern "C" {

typedef struct FmsSpm FmsSpm;

// Loads a tokenizer.model; on failure returns NULL and writes a message to err.
FmsSpm* fms_spm_load(const char* path, char* err, size_t err_len);
void fms_spm_free(FmsSpm* spm);

int32_t fms_spm_vocab_size(const FmsSpm* spm);
// Special ids; -1 when the model has none.
int32_t fms_spm_bos_id(const FmsSpm* spm);
int32_t fms_spm_eos_id(const FmsSpm* spm);
int32_t fms_spm_unk_id(const FmsSpm* spm);
int32_t fms_spm_pad_id(const FmsSpm* spm);
// 1 if the id is a control symbol (<s>, </s>), a byte piece (<0x0A>) or unknown.
int32_t fms_spm_is_control(const FmsSpm* spm, int32_t id);
int32_t fms_spm_is_byte(const FmsSpm* spm, int32_t id);

// Raw vocabulary string of `id`; the pointer lives as long as `spm`.
const char* fms_spm_id_to_piece(const FmsSpm* spm, int32_t id, size_t* len);

// Encodes `text` (no BOS/EOS added). Writes at most `cap` ids with their UTF-8
// byte offsets [begin, end) into the input (offset arrays may be NULL) and
// returns the full count, which may exceed `cap`; -1 on error.
int64_t fms_spm_encode(const FmsSpm* spm, const char* text, size_t len,
                       int32_t* ids, uint32_t* begins, uint32_t* ends,
                       int64_t cap);

// Decodes ids to text. Writes at most `cap` bytes and returns the full length,
// which may exceed `cap`; -1 on error (for example an id out of range).
int64_t fms_spm_decode(const FmsSpm* spm, const int32_t* ids, int64_t n,
                       char* out, int64_t cap);

}  // extern "C"

#endif  // FMS_SERVER_SPM_SHIM_H_
