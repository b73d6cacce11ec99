#include "sharding/cpu_budget.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fms {

std::optional<int> CoresFromCpuMax(const std::string& cpu_max) {
  std::vector<std::string> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(cpu_max), ' ', absl::SkipEmpty());
  int64_t quota = 0, period = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &quota) ||
      !absl::SimpleAtoi(parts[1], &period) || quota <= 0 || period <= 0) {
    return std::nullopt;  // "max 100000", or not a cpu.max.
  }
  return static_cast<int>(std::max<int64_t>(1, (quota + period - 1) / period));
}

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// This process's cgroup v2 path ("0::/kubepods/..."), from /proc/self/cgroup.
std::string OwnCgroup() {
  std::istringstream lines(ReadFile("/proc/self/cgroup"));
  for (std::string line; std::getline(lines, line);) {
    if (absl::StartsWith(line, "0::")) return line.substr(3);
  }
  return "";
}

}  // namespace

int CpuBudget(const std::string& cgroup_root) {
  int cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) cores = CPU_COUNT(&mask);
  // The quota of this cgroup or any ancestor; the tightest one binds.
  std::string cgroup = OwnCgroup();
  while (true) {
    if (auto quota = CoresFromCpuMax(ReadFile(cgroup_root + cgroup + "/cpu.max"))) {
      cores = std::min(cores, *quota);
    }
    if (cgroup.empty() || cgroup == "/") break;
    cgroup = cgroup.substr(0, cgroup.rfind('/'));
  }
  return std::max(1, cores);
}

int WorkerThreads(int cpu_budget, int num_shard, const char* omp_num_threads) {
  int chosen = 0;
  if (omp_num_threads != nullptr && absl::SimpleAtoi(omp_num_threads, &chosen) &&
      chosen > 0) {
    return chosen;
  }
  return std::max(1, cpu_budget / std::max(1, num_shard));
}

}  // namespace fms
