// collectives_bench: latency of the worker group's all-reduce and gather
// (sharding/process_group.h) at the sizes a decode step uses. Start one
// process per rank:
//
//   collectives_bench --rank 1 --world 2 & collectives_bench --rank 0 --world 2
//       [--port 29511] [--elements 768] [--iters 2000]
//
// Rank 0 prints one JSON line: microseconds per all-reduce and per gather.

#include <ATen/ATen.h>

#include <chrono>
#include <iostream>
#include <string>

#include "nlohmann/json.hpp"
#include "sharding/process_group.h"

namespace fms {
namespace {

int Run(int argc, char** argv) {
  int rank = 0, world = 2, port = 29511, iters = 2000;
  int64_t elements = 768;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t value = std::stoll(argv[i + 1]);
    if (flag == "--rank") rank = static_cast<int>(value);
    else if (flag == "--world") world = static_cast<int>(value);
    else if (flag == "--port") port = static_cast<int>(value);
    else if (flag == "--elements") elements = value;
    else if (flag == "--iters") iters = static_cast<int>(value);
    else return 2;
  }
  auto group = JoinProcessGroup({.rank = rank, .world_size = world, .master_port = port});
  if (!group.ok()) {
    std::cerr << group.status().message() << "\n";
    return 1;
  }
  at::Tensor t = at::ones({1, elements});  // [1, elements]: one decode row.
  auto time_us = [&](auto op) {
    for (int i = 0; i < iters / 10; ++i) op();  // Warm-up.
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) op();
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
               .count() / iters;
  };
  const double all_reduce = time_us([&] { (*group)->AllReduceSum(t); });
  const double gather = time_us([&] { (*group)->GatherColumnsToRank0(t); });
  if (rank == 0) {
    std::cout << nlohmann::json{{"world", world}, {"elements", elements},
                                {"all_reduce_us", all_reduce}, {"gather_us", gather}}
                     .dump()
              << std::endl;
  }
  return 0;
}

}  // namespace
}  // namespace fms

int main(int argc, char** argv) { return fms::Run(argc, argv); }
