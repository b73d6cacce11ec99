// AdapterStore: the front end's side of adapters (adapter_id / prefix_id).
// It validates an id as vllm-tgis-adapter does (same messages), finds the
// adapter's folder inside ADAPTER_CACHE (never outside it: no absolute
// paths, no "..", no symlink out), checks its kind and limits, has every
// worker rank load it on first use (one load however many requests ask at
// once), and keeps an LRU of loaded adapters bounded by count and bytes.
//
// A request holds an AdapterLease from validation until its run ends; a
// leased adapter is never unloaded. Each load gets its own engine id
// ("<id>@<n>"), so an unload of an evicted load can never remove a newer
// load of the same adapter from the workers.

#ifndef FMS_SERVER_ADAPTER_STORE_H_
#define FMS_SERVER_ADAPTER_STORE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "batching/engine.h"

namespace fms {

struct AdapterStoreOptions {
  std::string root;  // ADAPTER_CACHE / PREFIX_STORE_PATH; empty: adapters refused.
  uint32_t max_loaded = 8;         // MAX_LORAS.
  int64_t max_bytes = 512 << 20;   // PROMPT_CACHE_SIZE_MB.
  uint32_t max_lora_rank = 64;     // MAX_LORA_RANK.
  uint32_t max_prompt_prefix_length = 256;  // MAX_PROMPT_PREFIX_LENGTH.
};

class AdapterStore;

// A request's hold on a loaded adapter.
class AdapterLease {
 public:
  ~AdapterLease();
  AdapterLease(const AdapterLease&) = delete;
  AdapterLease& operator=(const AdapterLease&) = delete;

  const std::string& engine_id() const;  // For Request::adapter.
  int64_t virtual_tokens() const;        // Prompt tuning; 0 for LoRA.

 private:
  friend class AdapterStore;
  struct Entry;
  explicit AdapterLease(std::shared_ptr<Entry> entry);
  std::shared_ptr<Entry> entry_;
};

class AdapterStore {
 public:
  // `engine` must outlive the store.
  AdapterStore(AdapterStoreOptions options, Engine* engine);

  // The adapter `id`, loaded on the workers, held until the lease goes.
  // INVALID_ARGUMENT with vllm-tgis-adapter's message for a bad id, a
  // missing folder or config, an unsupported type, and for an adapter the
  // workers refuse (the message names the tensor).
  absl::StatusOr<std::shared_ptr<const AdapterLease>> Acquire(const std::string& id);

  // The workers restarted and hold nothing: every adapter loads again on
  // its next use.
  void Forget();

  // Adapters loaded now (for tests and /metrics).
  int64_t loaded() const;

 private:
  using Entry = AdapterLease::Entry;
  // The adapter's folder inside the store, or the id's error.
  absl::StatusOr<std::string> Resolve(const std::string& id) const;
  // Loads `id` for `entry` (not under mu_).
  absl::Status Load(const std::string& id, Entry& entry);
  // Drops least recently used unleased loads beyond the bounds; returns
  // their engine ids, for UnloadAdapter outside the lock.
  std::vector<std::string> Evict(const Entry* keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const AdapterStoreOptions options_;
  Engine* const engine_;
  mutable absl::Mutex mu_;
  absl::CondVar settled_;  // A load finished (or failed).
  std::map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;  // Recency, for the LRU.
  uint64_t loads_ ABSL_GUARDED_BY(mu_) = 0;  // Makes engine ids unique.
};

}  // namespace fms

#endif  // FMS_SERVER_ADAPTER_STORE_H_
