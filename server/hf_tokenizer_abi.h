// C ABI of the Rust crate server/hf_tokenizer (Hugging Face `tokenizers`),
// linked statically into fms-server. Only plain C types cross it, and no Rust
// panic does: each entry point catches one and reports it as an error.
// Messages are written NUL-terminated into the caller's `error` buffer.

#ifndef FMS_SERVER_HF_TOKENIZER_ABI_H_
#define FMS_SERVER_HF_TOKENIZER_ABI_H_

#include <stddef.h>
#include <stdint.h>

extern "C" {

typedef struct FmsHfTokenizer FmsHfTokenizer;
typedef struct FmsHfEncoding FmsHfEncoding;

// Loads a tokenizer.json; NULL on failure, with the library's message.
FmsHfTokenizer* fms_hf_load(const char* path, char* error, size_t error_len);
void fms_hf_free(FmsHfTokenizer* t);

// One more than the largest id, added tokens included.
int32_t fms_hf_vocab_size(const FmsHfTokenizer* t);
// The raw token string of `id` (not NUL-terminated; lives as long as `t`), or
// NULL outside the vocabulary.
const char* fms_hf_token(const FmsHfTokenizer* t, int32_t id, size_t* len);
// 1 for an added token marked special, else 0.
int32_t fms_hf_is_special(const FmsHfTokenizer* t, int32_t id);
// The id of a token string, or -1.
int32_t fms_hf_token_to_id(const FmsHfTokenizer* t, const char* token, size_t len);

// Encodes `len` bytes of UTF-8; NULL on failure. The offsets are UTF-8 byte
// offsets into the text. Free with fms_hf_encoding_free.
FmsHfEncoding* fms_hf_encode(const FmsHfTokenizer* t, const char* text, size_t len,
                             int32_t add_special_tokens, char* error, size_t error_len);
size_t fms_hf_encoding_len(const FmsHfEncoding* e);
const int32_t* fms_hf_encoding_ids(const FmsHfEncoding* e);
const uint32_t* fms_hf_encoding_begins(const FmsHfEncoding* e);
const uint32_t* fms_hf_encoding_ends(const FmsHfEncoding* e);
void fms_hf_encoding_free(FmsHfEncoding* e);

// Decodes `n` ids; returns a buffer of *out_len bytes to free with
// fms_hf_string_free, or NULL on failure.
char* fms_hf_decode(const FmsHfTokenizer* t, const int32_t* ids, size_t n,
                    int32_t skip_special_tokens, size_t* out_len, char* error,
                    size_t error_len);
void fms_hf_string_free(char* s, size_t len);

// The largest extended-grapheme-cluster boundary (Unicode UAX #29, the
// unicode-segmentation crate) at or before byte `pos` of `len` bytes of UTF-8;
// `len` when pos >= len.
size_t fms_grapheme_floor(const char* text, size_t len, size_t pos);

}  // extern "C"

#endif  // FMS_SERVER_HF_TOKENIZER_ABI_H_
