#include "server/tokenizer.h"

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

// The shim's entry points, resolved once per Tokenizer.
struct Tokenizer::Api {
  void* library = nullptr;  // dlopen handle, closed by ~Tokenizer.
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

absl::StatusOr<std::unique_ptr<Tokenizer::Api>> OpenShim(
    const std::string& path) {
  // RTLD_DEEPBIND: the shim and libsentencepiece resolve their own symbols
  // (protobuf 3.14, FLAGS_*) before the process's global ones.
  void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (library == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load the SentencePiece shim: ", dlerror()));
  }
  auto api = std::make_unique<Tokenizer::Api>();
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

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(
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
  return std::unique_ptr<Tokenizer>(new Tokenizer(*std::move(api), handle));
}

Tokenizer::Tokenizer(std::unique_ptr<Api> api, void* handle)
    : api_(std::move(api)), handle_(handle) {}

Tokenizer::~Tokenizer() {
  api_->free(static_cast<FmsSpm*>(handle_));
  dlclose(api_->library);
}

Encoding Tokenizer::Encode(std::string_view text) const {
  const auto* spm = static_cast<const FmsSpm*>(handle_);
  Encoding encoding;
  // A token covers at least one byte, so text.size() + 1 ids normally
  // suffice; a longer answer is read again with the size the shim reported.
  int64_t cap = static_cast<int64_t>(text.size()) + 1;
  int64_t n = 0;
  for (;;) {
    encoding.ids.resize(cap);
    encoding.begins.resize(cap);
    encoding.ends.resize(cap);
    n = api_->encode(spm, text.data(), text.size(), encoding.ids.data(),
                     encoding.begins.data(), encoding.ends.data(), cap);
    if (n <= cap) break;
    cap = n;
  }
  n = std::max<int64_t>(n, 0);
  encoding.ids.resize(n);
  encoding.begins.resize(n);
  encoding.ends.resize(n);
  return encoding;
}

absl::StatusOr<std::string> Tokenizer::Decode(
    std::span<const int32_t> ids) const {
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

std::string_view Tokenizer::IdToPiece(int32_t id) const {
  size_t len = 0;
  const char* piece =
      api_->id_to_piece(static_cast<const FmsSpm*>(handle_), id, &len);
  return std::string_view(piece, len);
}

bool Tokenizer::IsControl(int32_t id) const {
  return api_->is_control(static_cast<const FmsSpm*>(handle_), id) != 0;
}

bool Tokenizer::IsByte(int32_t id) const {
  return api_->is_byte(static_cast<const FmsSpm*>(handle_), id) != 0;
}

int32_t Tokenizer::vocab_size() const {
  return api_->vocab_size(static_cast<const FmsSpm*>(handle_));
}
int32_t Tokenizer::bos_id() const {
  return api_->bos_id(static_cast<const FmsSpm*>(handle_));
}
int32_t Tokenizer::eos_id() const {
  return api_->eos_id(static_cast<const FmsSpm*>(handle_));
}

}  // namespace fms
