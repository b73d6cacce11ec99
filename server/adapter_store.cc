#include "server/adapter_store.h"

#include <cctype>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/match.h"
#include "model/adapter_config.h"

namespace fms {

struct AdapterLease::Entry {
  enum class State { kLoading, kReady };
  State state = State::kLoading;
  std::string engine_id;     // "<id>@<n>".
  AdapterInfo info;
  std::atomic<int64_t> leases{0};
  uint64_t last_used = 0;
};

AdapterLease::AdapterLease(std::shared_ptr<Entry> entry) : entry_(std::move(entry)) {
  ++entry_->leases;
}
AdapterLease::~AdapterLease() { --entry_->leases; }
const std::string& AdapterLease::engine_id() const { return entry_->engine_id; }
int64_t AdapterLease::virtual_tokens() const { return entry_->info.virtual_tokens; }

namespace {

absl::Status Invalid(std::string message) {
  return absl::InvalidArgumentError(std::move(message));
}

absl::Status NotRetrievable(const std::string& id, absl::string_view why) {
  return Invalid(absl::StrCat("can't retrieve adapter with id '", id, "': ", why));
}

absl::Status BadId(const std::string& id) {
  return Invalid(absl::StrCat("Invalid adapter id '", id,
                              "', must contain only alphanumeric, _ and - and /"));
}

// vllm-tgis-adapter's pattern [/\w\-]+ (Python's \w takes Unicode letters:
// bytes of UTF-8 sequences are let through), and not absolute.
bool ValidId(const std::string& id) {
  if (id.empty() || id.front() == '/') return false;
  for (unsigned char c : id) {
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == '/' || c >= 0x80)) return false;
  }
  return true;
}

}  // namespace

AdapterStore::AdapterStore(AdapterStoreOptions options, Engine* engine)
    : options_(std::move(options)), engine_(engine) {}

absl::StatusOr<std::string> AdapterStore::Resolve(const std::string& id) const {
  namespace fs = std::filesystem;
  if (!ValidId(id)) return BadId(id);
  std::error_code error;
  const fs::path root = fs::canonical(options_.root, error);
  if (error) return NotRetrievable(id, "directory does not exist");
  const fs::path dir = fs::canonical(root / id, error);
  if (error || !fs::is_directory(dir, error)) {
    return NotRetrievable(id, "directory does not exist");
  }
  // A symlink inside the store that leads out of it.
  if (!absl::StartsWith(dir.string(), root.string() + "/")) return BadId(id);
  return dir.string();
}

absl::Status AdapterStore::Load(const std::string& id, Entry& entry) {
  auto dir = Resolve(id);
  if (!dir.ok()) return dir.status();
  auto config = ReadAdapterConfig(*dir);
  if (!config.ok()) return NotRetrievable(id, config.status().message());
  if (config->kind == AdapterKind::kUnsupported) {
    return Invalid(absl::StrCat("adapter type ", config->peft_type,
                                " is not currently supported"));
  }
  if (config->kind == AdapterKind::kLora && config->rank > options_.max_lora_rank) {
    return NotRetrievable(id, absl::StrCat("LoRA rank ", config->rank,
                                           " is greater than MAX_LORA_RANK ",
                                           options_.max_lora_rank));
  }
  auto info = engine_->LoadAdapter(entry.engine_id, *dir);
  if (!info.ok()) {  // The client sees file names inside the adapter, not the store's path.
    const absl::Status refused = NotRetrievable(
        id, absl::StrReplaceAll(info.status().message(), {{absl::StrCat(*dir, "/"), ""}}));
    // A worker that is down or restarting is not the adapter's fault: its code stays.
    if (absl::IsInvalidArgument(info.status())) return refused;
    return absl::Status(info.status().code(), refused.message());
  }
  if (info->virtual_tokens > options_.max_prompt_prefix_length) {
    engine_->UnloadAdapter(entry.engine_id);
    return NotRetrievable(id, absl::StrCat(info->virtual_tokens,
                                           " virtual tokens are more than "
                                           "MAX_PROMPT_PREFIX_LENGTH ",
                                           options_.max_prompt_prefix_length));
  }
  entry.info = *std::move(info);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const AdapterLease>> AdapterStore::Acquire(
    const std::string& id) {
  if (options_.root.empty()) {
    return Invalid("adapter_id supplied but no adapter store was configured");
  }
  if (!ValidId(id)) return BadId(id);
  std::shared_ptr<Entry> entry;
  {
    absl::MutexLock lock(&mu_);
    for (;;) {
      auto it = entries_.find(id);
      if (it == entries_.end()) break;
      if (it->second->state == Entry::State::kReady) {
        it->second->last_used = ++clock_;
        return std::shared_ptr<const AdapterLease>(new AdapterLease(it->second));
      }
      settled_.Wait(&mu_);  // Another request is loading it: one load for all.
    }
    entry = std::make_shared<Entry>();
    entry->engine_id = absl::StrCat(id, "@", ++loads_);
    entries_[id] = entry;
  }
  const absl::Status loaded = Load(id, *entry);
  std::vector<std::string> unload;
  std::shared_ptr<const AdapterLease> lease;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(id);
    const bool current = it != entries_.end() && it->second == entry;  // Not Forget()-ten.
    if (current && !loaded.ok()) entries_.erase(it);
    if (loaded.ok()) {
      entry->state = Entry::State::kReady;
      entry->last_used = ++clock_;
      lease.reset(new AdapterLease(entry));
      unload = Evict(entry.get());
    }
    settled_.SignalAll();
  }
  for (const std::string& engine_id : unload) engine_->UnloadAdapter(engine_id);
  if (!loaded.ok()) return loaded;
  return lease;
}

std::vector<std::string> AdapterStore::Evict(const Entry* keep) {
  std::vector<std::string> unloaded;
  for (;;) {
    int64_t count = 0, bytes = 0;
    std::map<std::string, std::shared_ptr<Entry>>::iterator oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      const Entry& e = *it->second;
      if (e.state != Entry::State::kReady) continue;
      ++count;
      bytes += e.info.bytes;
      if (&e == keep || e.leases.load() > 0) continue;
      if (oldest == entries_.end() || e.last_used < oldest->second->last_used) oldest = it;
    }
    const bool over = count > options_.max_loaded || bytes > options_.max_bytes;
    if (!over || oldest == entries_.end()) return unloaded;  // In use: over, for now.
    unloaded.push_back(oldest->second->engine_id);
    entries_.erase(oldest);
  }
}

void AdapterStore::Forget() {
  absl::MutexLock lock(&mu_);
  entries_.clear();
  settled_.SignalAll();
}

int64_t AdapterStore::loaded() const {
  absl::MutexLock lock(&mu_);
  int64_t n = 0;
  for (const auto& [id, e] : entries_) n += e->state == Entry::State::kReady;
  return n;
}

}  // namespace fms
