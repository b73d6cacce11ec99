//! A C ABI over Hugging Face's `tokenizers` crate for fms-server
//! (declared for C++ in server/hf_tokenizer_abi.h).
//!
//! Every entry point runs inside `guard`: a Rust panic never unwinds into
//! C++. It becomes an error message (or a null/negative result) instead.
//! Token ids are i32 on the C side, as everywhere in fms-serve.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use tokenizers::Tokenizer;
use unicode_segmentation::UnicodeSegmentation;

/// A loaded tokenizer plus its vocabulary by id, kept so that token strings
/// can be lent to C++ without allocating.
pub struct FmsHfTokenizer {
    tokenizer: Tokenizer,
    tokens: Vec<String>, // By id; empty where the vocabulary has a gap.
    special: Vec<bool>,  // By id: an added token marked special.
}

/// The ids of one encoding and the UTF-8 byte range [begin, end) of the input
/// that each covers; special tokens added by the post-processor get (0, 0).
pub struct FmsHfEncoding {
    ids: Vec<i32>,
    begins: Vec<u32>,
    ends: Vec<u32>,
}

/// Runs `f`, turning a panic into an error message.
fn guard<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("tokenizers panicked: {what}"))
        }
    }
}

/// Copies `message` into the caller's buffer, cut at a character boundary and
/// NUL-terminated.
unsafe fn write_error(message: &str, error: *mut c_char, error_len: usize) {
    if error.is_null() || error_len == 0 {
        return;
    }
    let mut n = message.len().min(error_len - 1);
    while !message.is_char_boundary(n) {
        n -= 1;
    }
    ptr::copy_nonoverlapping(message.as_ptr(), error as *mut u8, n);
    *error.add(n) = 0;
}

/// A result handed to C: the value boxed, or null with the message written.
unsafe fn boxed_or_error<T>(result: Result<T, String>, error: *mut c_char, error_len: usize) -> *mut T {
    match result {
        Ok(value) => Box::into_raw(Box::new(value)),
        Err(message) => {
            write_error(&message, error, error_len);
            ptr::null_mut()
        }
    }
}

unsafe fn text_arg<'a>(text: *const c_char, len: usize) -> Result<&'a str, String> {
    if len == 0 {
        return Ok("");
    }
    let bytes = std::slice::from_raw_parts(text as *const u8, len);
    std::str::from_utf8(bytes).map_err(|e| format!("the text is not valid UTF-8: {e}"))
}

fn load(path: &str) -> Result<FmsHfTokenizer, String> {
    let tokenizer = Tokenizer::from_file(path).map_err(|e| e.to_string())?;
    let vocab = tokenizer.get_vocab(true);
    let size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
    if size > i32::MAX as usize {
        return Err(format!("vocabulary of {size} ids does not fit 32-bit ids"));
    }
    let mut tokens = vec![String::new(); size];
    for (token, id) in vocab {
        tokens[id as usize] = token;
    }
    let mut special = vec![false; size];
    for (id, added) in tokenizer.get_added_tokens_decoder() {
        if added.special && (id as usize) < size {
            special[id as usize] = true;
        }
    }
    Ok(FmsHfTokenizer { tokenizer, tokens, special })
}

/// Loads a tokenizer.json. Null on failure, with the library's message in
/// `error`.
#[no_mangle]
pub unsafe extern "C" fn fms_hf_load(
    path: *const c_char,
    error: *mut c_char,
    error_len: usize,
) -> *mut FmsHfTokenizer {
    let result = guard(|| {
        let path = CStr::from_ptr(path).to_str().map_err(|e| e.to_string())?;
        load(path)
    });
    boxed_or_error(result, error, error_len)
}

#[no_mangle]
pub unsafe extern "C" fn fms_hf_free(t: *mut FmsHfTokenizer) {
    if !t.is_null() {
        let _ = guard(|| {
            drop(Box::from_raw(t));
            Ok(())
        });
    }
}

/// One more than the largest id, added tokens included.
#[no_mangle]
pub unsafe extern "C" fn fms_hf_vocab_size(t: *const FmsHfTokenizer) -> i32 {
    (*t).tokens.len() as i32
}

/// The raw token string of `id` (not NUL-terminated; valid while `t` lives),
/// or null when `id` is outside the vocabulary.
#[no_mangle]
pub unsafe extern "C" fn fms_hf_token(
    t: *const FmsHfTokenizer,
    id: i32,
    len: *mut usize,
) -> *const c_char {
    let t = &*t;
    match usize::try_from(id).ok().and_then(|i| t.tokens.get(i)) {
        Some(token) => {
            *len = token.len();
            token.as_ptr() as *const c_char
        }
        None => {
            *len = 0;
            ptr::null()
        }
    }
}

/// 1 when `id` is an added token marked special (skipped by
/// decode(skip_special_tokens = true)), else 0.
#[no_mangle]
pub unsafe extern "C" fn fms_hf_is_special(t: *const FmsHfTokenizer, id: i32) -> i32 {
    let t = &*t;
    let special = usize::try_from(id).ok().and_then(|i| t.special.get(i));
    i32::from(special.copied().unwrap_or(false))
}

/// The id of a token string, or -1.
#[no_mangle]
pub unsafe extern "C" fn fms_hf_token_to_id(
    t: *const FmsHfTokenizer,
    token: *const c_char,
    len: usize,
) -> i32 {
    guard(|| {
        let token = text_arg(token, len)?;
        Ok((*t).tokenizer.token_to_id(token).map_or(-1, |id| id as i32))
    })
    .unwrap_or(-1)
}

/// Encodes `text` (`len` bytes of UTF-8). Null on failure, with the message in
/// `error`. Free the result with fms_hf_encoding_free.
#[no_mangle]
pub unsafe extern "C" fn fms_hf_encode(
    t: *const FmsHfTokenizer,
    text: *const c_char,
    len: usize,
    add_special_tokens: i32,
    error: *mut c_char,
    error_len: usize,
) -> *mut FmsHfEncoding {
    let result = guard(|| {
        let text = text_arg(text, len)?;
        let encoding = (*t)
            .tokenizer
            .encode(text, add_special_tokens != 0)
            .map_err(|e| e.to_string())?;
        // The offsets are UTF-8 byte offsets (OffsetType::Byte), as TGIS returns.
        let (begins, ends) = encoding.get_offsets().iter().map(|&(b, e)| (b as u32, e as u32)).unzip();
        let ids = encoding.get_ids().iter().map(|&id| id as i32).collect();
        Ok(FmsHfEncoding { ids, begins, ends })
    });
    boxed_or_error(result, error, error_len)
}

#[no_mangle]
pub unsafe extern "C" fn fms_hf_encoding_len(e: *const FmsHfEncoding) -> usize {
    (*e).ids.len()
}

#[no_mangle]
pub unsafe extern "C" fn fms_hf_encoding_ids(e: *const FmsHfEncoding) -> *const i32 {
    (*e).ids.as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn fms_hf_encoding_begins(e: *const FmsHfEncoding) -> *const u32 {
    (*e).begins.as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn fms_hf_encoding_ends(e: *const FmsHfEncoding) -> *const u32 {
    (*e).ends.as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn fms_hf_encoding_free(e: *mut FmsHfEncoding) {
    if !e.is_null() {
        drop(Box::from_raw(e));
    }
}

/// Decodes `n` ids into UTF-8 text, written to a buffer that the caller frees
/// with fms_hf_string_free(ptr, *out_len). Null on failure, with the message
/// in `error`.
#[no_mangle]
pub unsafe extern "C" fn fms_hf_decode(
    t: *const FmsHfTokenizer,
    ids: *const i32,
    n: usize,
    skip_special_tokens: i32,
    out_len: *mut usize,
    error: *mut c_char,
    error_len: usize,
) -> *mut c_char {
    let result = guard(|| {
        let ids: &[i32] = if n == 0 { &[] } else { std::slice::from_raw_parts(ids, n) };
        let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        (*t).tokenizer.decode(&ids, skip_special_tokens != 0).map_err(|e| e.to_string())
    });
    match result {
        Ok(text) => {
            let bytes = text.into_bytes().into_boxed_slice();
            *out_len = bytes.len();
            Box::into_raw(bytes) as *mut c_char
        }
        Err(message) => {
            write_error(&message, error, error_len);
            *out_len = 0;
            ptr::null_mut()
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn fms_hf_string_free(s: *mut c_char, len: usize) {
    if !s.is_null() {
        drop(Box::from_raw(ptr::slice_from_raw_parts_mut(s as *mut u8, len)));
    }
}

/// The largest extended-grapheme-cluster boundary at or before byte `pos` of
/// `len` bytes of UTF-8 (`len` when `pos >= len`; 0 for invalid text). A
/// streamed text is released only up to such a boundary, so that an emoji
/// with its modifiers, or a letter with its combining marks, arrives in one
/// piece (TGIS's router streams whole clusters too).
#[no_mangle]
pub unsafe extern "C" fn fms_grapheme_floor(text: *const c_char, len: usize, pos: usize) -> usize {
    guard(|| {
        let text = text_arg(text, len)?;
        if pos >= text.len() {
            return Ok(text.len());
        }
        let starts = text.grapheme_indices(true).map(|(start, _)| start);
        Ok(starts.take_while(|&start| start <= pos).last().unwrap_or(0))
    })
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_an_error() {
        let result: Result<(), String> = guard(|| panic!("boom {}", 7));
        assert_eq!(result.unwrap_err(), "tokenizers panicked: boom 7");
        let result: Result<(), String> = guard(|| panic!("static"));
        assert_eq!(result.unwrap_err(), "tokenizers panicked: static");
    }

    #[test]
    fn errors_are_cut_at_a_character_boundary() {
        let mut buffer = [1 as c_char; 4];
        unsafe { write_error("aé€", buffer.as_mut_ptr(), buffer.len()) };
        // 3 bytes fit: "a" and "é" (2 bytes); "€" would be split.
        let written = unsafe { CStr::from_ptr(buffer.as_ptr()) };
        assert_eq!(written.to_str().unwrap(), "aé");
    }

    fn floor(text: &str, pos: usize) -> usize {
        unsafe { fms_grapheme_floor(text.as_ptr() as *const c_char, text.len(), pos) }
    }

    #[test]
    fn grapheme_floors_keep_clusters_whole() {
        assert_eq!(floor("", 0), 0);
        assert_eq!(floor("ab", 1), 1);
        assert_eq!(floor("ab", 5), 2);
        assert_eq!(floor("ok 👍🏽", 8), 3); // Thumb and skin tone: one cluster.
        assert_eq!(floor("x👨‍👩‍👧 y", 10), 1); // A ZWJ family: one cluster.
        assert_eq!(floor("cafe\u{301}", 4), 3); // e and its combining acute.
        assert_eq!(floor("a\r\n", 2), 1); // CR LF is one cluster.
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_panic() {
        let mut buffer = [0 as c_char; 256];
        let path = b"/nonexistent/tokenizer.json\0";
        let t = unsafe { fms_hf_load(path.as_ptr() as *const c_char, buffer.as_mut_ptr(), 256) };
        assert!(t.is_null());
        let message = unsafe { CStr::from_ptr(buffer.as_ptr()) }.to_str().unwrap();
        assert!(!message.is_empty());
    }
}
