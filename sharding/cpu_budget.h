// How many cores the workers may keep busy: the CPUs this process may run on
// (sched_getaffinity), capped by a cgroup v2 CPU quota (cpu.max), rounded up.
// In a Kubernetes pod with `limits.cpu: 8` on a 64-core node the quota says 8:
// 64 compute threads there would be throttled most of each period.

#ifndef FMS_SHARDING_CPU_BUDGET_H_
#define FMS_SHARDING_CPU_BUDGET_H_

#include <optional>
#include <string>

namespace fms {

// Cores granted by the contents of a cgroup v2 `cpu.max` file ("QUOTA PERIOD",
// or "max PERIOD" for no limit), rounded up; nullopt when unlimited or unreadable.
std::optional<int> CoresFromCpuMax(const std::string& cpu_max);

// min(CPUs in the affinity mask, the quota of this process's cgroup), >= 1.
// `cgroup_root` is where cgroup v2 is mounted.
int CpuBudget(const std::string& cgroup_root = "/sys/fs/cgroup");

// Compute threads per worker for `num_shard` workers on `cpu_budget` cores:
// `omp_num_threads` (the server's own OMP_NUM_THREADS, the operator's choice)
// when it is a positive number, else the budget less one core for the front
// end, the RPCs and co-located clients, split over the workers, at least 1.
// The reserved core: an OpenMP region waits for its slowest thread, so a
// worker using every core stalls whenever the front end runs; on the 2-core
// machine one thread served SmolLM2 bf16 faster than two at every
// concurrency (docs/benchmarks.md, "Worker threads").
int WorkerThreads(int cpu_budget, int num_shard, const char* omp_num_threads);

}  // namespace fms

#endif  // FMS_SHARDING_CPU_BUDGET_H_
