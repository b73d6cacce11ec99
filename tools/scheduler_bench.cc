// scheduler_bench: the cost of scheduling alone (Schedule + Update, no model)
// with N running sequences in steady decode. Not a test.
//
//   scheduler_bench [--sequences 256] [--prompt 512] [--steps 2000]
//
// Prints sequence-steps per second and microseconds per step as JSON.

#include <chrono>
#include <iostream>
#include <string>

#include "batching/scheduler.h"
#include "nlohmann/json.hpp"

namespace fms {
namespace {

int Run(int argc, char** argv) {
  int64_t sequences = 256, prompt = 512, steps = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t value = std::stoll(argv[i + 1]);
    if (flag == "--sequences") sequences = value;
    else if (flag == "--prompt") prompt = value;
    else if (flag == "--steps") steps = value;
  }
  const int64_t block_size = 16;
  const int64_t blocks_per_seq = (prompt + steps + 2 + block_size - 1) / block_size;
  Scheduler scheduler({.max_batch_size = sequences,
                       .max_tokens_per_step = sequences * prompt,
                       .num_blocks = sequences * blocks_per_seq,
                       .block_size = block_size,
                       .eos_token_ids = {2}});
  for (SequenceId id = 0; id < sequences; ++id) {
    Request request{.id = id, .prompt = std::vector<int32_t>(prompt, 7)};
    request.stopping.max_new_tokens = static_cast<uint32_t>(steps + 2);
    if (!scheduler.Add(request).ok()) return 1;
  }
  auto step = [&] {
    std::vector<SequenceEvent> events;
    const StepPlan plan = scheduler.Schedule(Clock::now(), &events);
    StepResult result{.step = plan.step};
    for (const ScheduledChunk& c : plan.chunks) {
      if (c.sample) result.outputs.push_back({.id = c.id, .token = 5});
    }
    return scheduler.Update(result, Clock::now()).size();
  };
  step();  // Prefill all: not timed.
  size_t events = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) events += step();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << nlohmann::json{{"sequences", sequences},
                              {"steps", steps},
                              {"events", events},
                              {"us_per_step", 1e6 * seconds / steps},
                              {"sequence_steps_per_s", sequences * steps / seconds}}
                   .dump()
            << std::endl;
  return 0;
}

}  // namespace
}  // namespace fms

int main(int argc, char** argv) { return fms::Run(argc, argv); }
