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
// when it is a positive number, else the budget split over the workers, at
// least 1. No core is kept back for the front end: on the 2-core machine a
// worker on both cores served SmolLM2 faster at c=1 and c=4 than one that
// left a core free, in bf16 and fp32 (docs/benchmarks.md, "Worker threads,
// measured again"). An earlier measurement had said the opposite while the
// worker ran two OpenMP pools, which made its threads sleep between regions
// ("One OpenMP pool per worker"). Operators who co-locate other work set
// OMP_NUM_THREADS.
int WorkerThreads(int cpu_budget, int num_shard, const char* omp_num_threads);

}  // namespace fms

#endif  // FMS_SHARDING_CPU_BUDGET_H_
