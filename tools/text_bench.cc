// text_bench: what detokenization costs, and where it runs. Not a test.
//
//   text_bench MODEL_DIR [--sequences 256] [--steps 400]
//
// 1. Cost per generated token of TextStream (incremental, offset window) for
//    100 to 8,000 tokens of real text, with a stop sequence that never
//    matches (the search runs on every token), against the baseline that
//    decodes every generated token again for each new one (the TextStream
//    before issue 10).
// 2. The batcher's loop at N running sequences over a zero-cost FakeEngine,
//    with one waiting thread per request as in gRPC's sync server, in four
//    set-ups (Mode): no text work at all (the floor); the design before
//    issue 10 (every token's sink re-decodes the whole generated text on the
//    batcher thread, then wakes the request's thread); incremental decoding
//    still on the batcher thread; and now (the sink only queues the event;
//    the request's thread decodes incrementally).
// Prints one JSON object per line.

#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "batching/batcher.h"
#include "batching/fake_engine.h"
#include "nlohmann/json.hpp"
#include "server/event_queue.h"
#include "server/text_stream.h"
#include "server/tokenizer.h"

namespace fms {
namespace {

using Seconds = std::chrono::duration<double>;

// Real text: Debian fortunes, tokenized, repeated to `n` tokens.
std::vector<int32_t> RealTokens(const Tokenizer& tokenizer, size_t n) {
  std::ifstream in("/usr/share/games/fortunes/fortunes");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) text = "The quick brown fox jumps over the lazy dog. ";
  std::vector<int32_t> ids = tokenizer.Encode(text, false)->ids;
  std::vector<int32_t> out;
  while (out.size() < n) out.insert(out.end(), ids.begin(), ids.end());
  out.resize(n);
  return out;
}

// The baseline: the whole generated text decoded again for every token.
double QuadraticMicrosPerToken(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<int32_t> generated;
  size_t released = 0;
  for (int32_t id : ids) {
    generated.push_back(id);
    const std::string text = *tokenizer.Decode(generated, true);
    released = std::max(released, text.size());
  }
  const double seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  return released > 0 ? 1e6 * seconds / static_cast<double>(ids.size()) : 0;
}

double StreamMicrosPerToken(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  TextStream stream(&tokenizer, {}, {.stop_sequences = {"never matches, 40 bytes of stop text!!"},
                                     .include_stop_sequence = false});
  const auto start = std::chrono::steady_clock::now();
  size_t bytes = 0;
  for (int32_t id : ids) bytes += stream.Add(id)->text.size();
  bytes += stream.Flush()->size();
  const double seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  return bytes > 0 ? 1e6 * seconds / static_cast<double>(ids.size()) : 0;
}

void PerTokenCost(const Tokenizer& tokenizer) {
  for (size_t n : {100, 500, 1000, 2000, 4000, 8000}) {
    const std::vector<int32_t> ids = RealTokens(tokenizer, n);
    const double incremental = StreamMicrosPerToken(tokenizer, ids);
    const double quadratic = n <= 4000 ? QuadraticMicrosPerToken(tokenizer, ids) : 0;
    std::cout << nlohmann::json{{"bench", "detokenize"}, {"tokens", n},
                                {"incremental_us_per_token", incremental},
                                {"redecode_all_us_per_token", quadratic}}
                     .dump()
              << std::endl;
  }
}

struct LoopResult {
  double batcher_us_per_step = 0;  // Until the batcher's last event.
  double all_text_us_per_step = 0;  // Until every request's text is done.
};

enum class Mode { kNoText, kRedecodeOnBatcher, kIncrementalOnBatcher, kNow };

const char* ModeName(Mode mode) {
  switch (mode) {
    case Mode::kNoText: return "no text work (floor)";
    case Mode::kRedecodeOnBatcher: return "before: re-decode all, batcher thread";
    case Mode::kIncrementalOnBatcher: return "incremental, batcher thread";
    case Mode::kNow: return "now: incremental, request threads";
  }
  return "";
}

// One thread per request waits for its events (as gRPC's sync server does).
LoopResult BatcherLoop(const Tokenizer& tokenizer, int64_t sequences, int64_t steps, Mode mode) {
  const int64_t prompt = 16, block_size = 16;
  FakeEngine engine({.num_blocks = sequences * ((prompt + steps) / block_size + 2),
                     .block_size = block_size, .vocab_size = tokenizer.vocab_size()});
  Batcher batcher(&engine, {.max_batch_size = sequences, .max_tokens_per_step = sequences * prompt,
                            .num_blocks = engine.Info().num_blocks, .block_size = block_size});
  std::atomic<int64_t> open{sequences};
  absl::Notification batcher_done;
  std::vector<std::unique_ptr<TextStream>> streams;
  std::vector<std::shared_ptr<EventQueue>> queues;
  std::vector<std::thread> readers;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < sequences; ++i) {
    Request request{.prompt = std::vector<int32_t>(prompt, 1000 + static_cast<int32_t>(i)),
                    .arrival = Clock::now()};
    request.stopping.max_new_tokens = static_cast<uint32_t>(steps);
    streams.push_back(std::make_unique<TextStream>(&tokenizer, request.prompt,
                                                   TextStreamOptions{.stop_sequences = {"zzz"}}));
    TextStream* stream = streams.back().get();
    auto queue = std::make_shared<EventQueue>();
    queues.push_back(queue);
    auto generated = std::make_shared<std::vector<int32_t>>();
    EventSink sink = [&, stream, queue, generated](const SequenceEvent& event) {
      if (event.has_token && mode == Mode::kIncrementalOnBatcher) (void)stream->Add(event.token);
      if (event.has_token && mode == Mode::kRedecodeOnBatcher) {
        generated->push_back(event.token);
        (void)tokenizer.Decode(*generated, true);
      }
      queue->Push(0, event);
      if (event.finish != FinishReason::kNotFinished && --open == 0) batcher_done.Notify();
    };
    readers.emplace_back([stream, queue, mode] {
      for (bool done = false; !done;) {
        for (const QueuedEvent& q : queue->Take(absl::Milliseconds(50))) {
          if (mode == Mode::kNow && q.event.has_token) (void)stream->Add(q.event.token);
          done |= q.event.finish != FinishReason::kNotFinished;
        }
      }
    });
    if (!batcher.Submit(request, sink).ok()) std::abort();
  }
  batcher_done.WaitForNotification();
  const double batcher_seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  for (std::thread& t : readers) t.join();
  const double all_seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  const double n = static_cast<double>(steps);
  return {1e6 * batcher_seconds / n, 1e6 * all_seconds / n};
}

int Run(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: text_bench MODEL_DIR [--sequences 256] [--steps 400]\n";
    return 2;
  }
  int64_t sequences = 256, steps = 400;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--sequences") sequences = std::stoll(argv[i + 1]);
    if (flag == "--steps") steps = std::stoll(argv[i + 1]);
  }
  auto tokenizer = LoadTokenizer(argv[1]);
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  PerTokenCost(**tokenizer);
  for (Mode mode : {Mode::kNoText, Mode::kRedecodeOnBatcher, Mode::kIncrementalOnBatcher,
                    Mode::kNow}) {
    const LoopResult r = BatcherLoop(**tokenizer, sequences, steps, mode);
    std::cout << nlohmann::json{{"bench", "batcher_loop"}, {"mode", ModeName(mode)},
                                {"sequences", sequences}, {"steps", steps},
                                {"batcher_us_per_step", r.batcher_us_per_step},
                                {"until_all_text_us_per_step", r.all_text_us_per_step}}
                     .dump()
              << std::endl;
  }
  return 0;
}

}  // namespace
}  // namespace fms

int main(int argc, char** argv) { return fms::Run(argc, argv); }
