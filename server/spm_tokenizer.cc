#include "server/spm_tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/spm_shim.h"

namespace fms {

constexpr char kShimName[] = "libfms_spm_shim.so";
constexpr char kShimRunfilesPath[] = "fms_serve/server/libfms_spm_shim.so";

// The shim's entry points, resolved once per SpmTokenizer.
struct SpmTokenizer::Api {
  void* library = nullptr;  // dlopen handle, released by ~SpmTokenizer.
  decltype(&fms_spm_load) load;
  decltype(&fms_spm_free) free;
  decltype(&fms_spm_vocab_size) vocab_size;
  decltype(&fms_spm_bos_id) bos_id;
  decltype(&fms_spm_eos_id) eos_id;
  decltype(&fms_spm_is_control) is_control;
  decltype(&fms_spm_is_byte) is_byte;
  decltype(&fms_spm_id_to_piece) id_to_piece;
  decltype(&fms_spm_encode) encode;
  decltype(&fms_spm_decode) decode;
};

namespace {

std::vector<std::filesystem::path> ShimCandidates() {
  std::vector<std::filesystem::path> paths;
  if (const char* env = std::getenv("FMS_SPM_SHIM")) paths.emplace_back(env);
  std::error_code error;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    paths.push_back(exe.parent_path() / kShimName);
    paths.push_back(exe.string() + ".runfiles/" + kShimRunfilesPath);
  }
  for (const char* var : {"RUNFILES_DIR", "TEST_SRCDIR"}) {
    if (const char* dir = std::getenv(var)) {
      paths.push_back(std::filesystem::path(dir) / kShimRunfilesPath);
    }
  }
  return paths;
}

template <typename Fn>
bool Resolve(void* library, const char* name, Fn* fn) {
  *fn = reinterpret_cast<Fn>(dlsym(library, name));
  return *fn != nullptr;
}

// RTLD_NODELETE: SentencePiece and its protobuf keep process-lifetime globals
// that only unloading would lose (17.5 KB per load, reported by LeakSanitizer);
// the shim stays mapped and a second load reuses it.
// RTLD_DEEPBIND: the shim and libsentencepiece resolve their own symbols
// (protobuf 3.14, FLAGS_*) before the process's global ones. Sanitizer
// runtimes refuse it, so sanitized binaries load a self-contained shim instead
// (FMS_SPM_SHIM, built by tools/sanitizer_deps: SentencePiece linked
// statically, none of its symbols exported).
constexpr int kShimBaseFlags = RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kShimFlags = kShimBaseFlags;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr int kShimFlags = kShimBaseFlags;
#else
constexpr int kShimFlags = kShimBaseFlags | RTLD_DEEPBIND;
#endif
#else
constexpr int kShimFlags = kShimBaseFlags | RTLD_DEEPBIND;
#endif

absl::StatusOr<std::unique_ptr<SpmTokenizer::Api>> OpenShim(
    const std::string& path) {
  void* library = dlopen(path.c_str(), kShimFlags);
  if (library == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load the SentencePiece shim: ", dlerror()));
  }
  auto api = std::make_unique<SpmTokenizer::Api>();
  api->library = library;
  const bool ok = Resolve(library, "fms_spm_load", &api->load) &&
                  Resolve(library, "fms_spm_free", &api->free) &&
                  Resolve(library, "fms_spm_vocab_size", &api->vocab_size) &&
                  Resolve(library, "fms_spm_bos_id", &api->bos_id) &&
                  Resolve(library, "fms_spm_eos_id", &api->eos_id) &&
                  Resolve(library, "fms_spm_is_control", &api->is_control) &&
                  Resolve(library, "fms_spm_is_byte", &api->is_byte) &&
                  Resolve(library, "fms_spm_id_to_piece", &api->id_to_piece) &&
                  Resolve(library, "fms_spm_encode", &api->encode) &&
                  Resolve(library, "fms_spm_decode", &api->decode);
  if (!ok) {
    dlclose(library);
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a compatible SentencePiece shim"));
  }
  return api;
}

}  // namespace

absl::StatusOr<std::string> FindSpmShim() {
  const auto candidates = ShimCandidates();
  for (const auto& path : candidates) {
    std::error_code error;
    if (std::filesystem::is_regular_file(path, error)) return path.string();
  }
  std::string tried;
  for (const auto& path : candidates) absl::StrAppend(&tried, " ", path.string());
  return absl::NotFoundError(
      absl::StrCat(kShimName, " not found; set FMS_SPM_SHIM (tried:", tried,
                   ")"));
}

absl::StatusOr<std::unique_ptr<SpmTokenizer>> SpmTokenizer::Load(
    const std::string& model_path, const TokenizerOptions& options) {
  std::string shim_path = options.shim_path;
  if (shim_path.empty()) {
    auto found = FindSpmShim();
    if (!found.ok()) return found.status();
    shim_path = *std::move(found);
  }
  auto api = OpenShim(shim_path);
  if (!api.ok()) return api.status();
  char error[512] = {0};
  void* handle = (*api)->load(model_path.c_str(), error, sizeof(error));
  if (handle == nullptr) {
    dlclose((*api)->library);
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load tokenizer ", model_path, ": ", error));
  }
  return std::unique_ptr<SpmTokenizer>(new SpmTokenizer(*std::move(api), handle));
}

SpmTokenizer::SpmTokenizer(std::unique_ptr<Api> api, void* handle)
    : api_(std::move(api)), handle_(handle) {}

SpmTokenizer::~SpmTokenizer() {
  api_->free(static_cast<FmsSpm*>(handle_));
  dlclose(api_->library);
}

absl::StatusOr<Encoding> SpmTokenizer::Encode(std::string_view text,
                                              bool add_special_tokens) const {
  const auto* spm = static_cast<const FmsSpm*>(handle_);
  const bool bos = add_special_tokens && bos_id() >= 0;
  Encoding encoding;
  // A token covers at least one byte, so text.size() + 1 ids normally
  // suffice; a longer answer is read again with the size the shim reported.
  int64_t cap = static_cast<int64_t>(text.size()) + 1;
  int64_t n = 0;
  for (;;) {
    encoding.ids.resize(cap + bos);
    encoding.begins.resize(cap + bos);
    encoding.ends.resize(cap + bos);
    n = api_->encode(spm, text.data(), text.size(), encoding.ids.data() + bos,
                     encoding.begins.data() + bos, encoding.ends.data() + bos, cap);
    if (n <= cap) break;
    cap = n;
  }
  if (n < 0) return absl::InternalError("SentencePiece could not encode the text");
  encoding.ids.resize(n + bos);
  encoding.begins.resize(n + bos);
  encoding.ends.resize(n + bos);
  if (bos) {  // Added tokens cover the empty range (0, 0).
    encoding.ids[0] = bos_id();
    encoding.begins[0] = encoding.ends[0] = 0;
  }
  return encoding;
}

absl::StatusOr<std::string> SpmTokenizer::DecodePlain(std::span<const int32_t> ids) const {
  const auto* spm = static_cast<const FmsSpm*>(handle_);
  std::string text(ids.size() * 8, '\0');
  int64_t n = api_->decode(spm, ids.data(), ids.size(), text.data(),
                           static_cast<int64_t>(text.size()));
  if (n > static_cast<int64_t>(text.size())) {
    text.resize(n);
    n = api_->decode(spm, ids.data(), ids.size(), text.data(), n);
  }
  if (n < 0) return absl::InvalidArgumentError("token id out of vocabulary");
  text.resize(n);
  return text;
}

absl::StatusOr<std::string> SpmTokenizer::Decode(std::span<const int32_t> ids,
                                                 bool skip_special_tokens) const {
  // SentencePiece drops control symbols; shown, they split the ids into runs.
  if (skip_special_tokens) return DecodePlain(ids);
  std::string text;
  size_t run = 0;
  for (size_t i = 0; i <= ids.size(); ++i) {
    if (i < ids.size() && !IsSpecial(ids[i])) continue;
    auto part = DecodePlain(ids.subspan(run, i - run));
    if (!part.ok()) return part.status();
    text += *part;
    if (i < ids.size()) text += IdToPiece(ids[i]);
    run = i + 1;
  }
  return text;
}

std::string_view SpmTokenizer::IdToPiece(int32_t id) const {
  size_t len = 0;
  const char* piece =
      api_->id_to_piece(static_cast<const FmsSpm*>(handle_), id, &len);
  return std::string_view(piece, len);
}

bool SpmTokenizer::IsSpecial(int32_t id) const {
  return api_->is_control(static_cast<const FmsSpm*>(handle_), id) != 0;
}

bool SpmTokenizer::IsByte(int32_t id) const {
  return api_->is_byte(static_cast<const FmsSpm*>(handle_), id) != 0;
}

int32_t SpmTokenizer::vocab_size() const {
  return api_->vocab_size(static_cast<const FmsSpm*>(handle_));
}
int32_t SpmTokenizer::bos_id() const {
  return api_->bos_id(static_cast<const FmsSpm*>(handle_));
}
int32_t SpmTokenizer::eos_id() const {
  return api_->eos_id(static_cast<const FmsSpm*>(handle_));
}

}  // namespace fms
