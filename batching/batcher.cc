#include "batching/batcher.h"

#include <utility>

namespace fms {

Batcher::Batcher(Engine* engine, SchedulerConfig config, BatcherMetrics* metrics)
    : engine_(engine), metrics_(metrics), scheduler_(std::move(config)) {
  thread_ = std::thread([this] { Loop(); });
}

Batcher::~Batcher() { Shutdown(); }

absl::StatusOr<SequenceId> Batcher::Submit(Request request, EventSink sink) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the batcher is shutting down");
  request.id = next_id_++;
  const SequenceId id = request.id;
  inbox_.push_back(Submission{std::move(request), std::move(sink)});
  return id;
}

void Batcher::Finish(SequenceId id, FinishReason reason) {
  absl::MutexLock lock(&mu_);
  inbox_.push_back(Ending{id, reason});
}

void Batcher::Reset(absl::Status status) {
  absl::MutexLock lock(&mu_);
  inbox_.push_back(ResetAll{std::move(status)});
}

void Batcher::FailOpen(const absl::Status& status) {
  for (auto& [id, submission] : open_) {
    submission.sink({.id = id, .finish = FinishReason::kError, .error = status});
  }
  open_.clear();
}

void Batcher::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool Batcher::DrainInbox() {
  std::deque<Command> commands;
  bool stopping = false;
  {
    absl::MutexLock lock(&mu_);
    // Sleep only when there is nothing to run.
    if (!scheduler_.HasWork()) {
      mu_.Await(absl::Condition(
          +[](Batcher* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
            return !b->inbox_.empty() || b->stopping_;
          },
          this));
    }
    commands.swap(inbox_);
    stopping = stopping_;
  }
  for (Command& command : commands) {
    if (auto* s = std::get_if<Submission>(&command)) {
      const SequenceId id = s->request.id;
      absl::Status status = scheduler_.Add(s->request);
      if (!status.ok()) {
        s->sink({.id = id, .finish = FinishReason::kError, .error = status});
        continue;
      }
      open_.emplace(id, std::move(*s));
    } else if (auto* e = std::get_if<Ending>(&command)) {
      scheduler_.Finish(e->id, e->reason);
    } else {
      FailOpen(std::get<ResetAll>(command).status);
      scheduler_ = Scheduler(scheduler_.config());
      last_stats_ = {};
    }
  }
  return !stopping;
}

void Batcher::Deliver(const std::vector<SequenceEvent>& events) {
  for (const SequenceEvent& event : events) {
    auto it = open_.find(event.id);
    if (it == open_.end()) continue;
    Submission& submission = it->second;
    if (submission.admitted.has_value() && !submission.admission_told) {
      SequenceEvent first = event;  // The first event after admission says when.
      first.admitted = submission.admitted;
      submission.admission_told = true;
      submission.sink(first);
    } else {
      submission.sink(event);
    }
    if (event.finish != FinishReason::kNotFinished) open_.erase(it);
  }
}

void Batcher::RunStep() {
  std::vector<SequenceEvent> events;
  const Clock::time_point now = Clock::now();
  const StepPlan plan = scheduler_.Schedule(now, &events);
  Deliver(events);
  if (plan.chunks.empty() && plan.finished.empty() && plan.preempted.empty()) return;
  for (const NewSequence& s : plan.new_sequences) {
    Submission& submission = open_.at(s.id);
    if (submission.admitted.has_value()) continue;  // Back after a preemption.
    submission.admitted = now;
    if (metrics_ == nullptr || submission.request.internal) continue;
    const auto queued = now - submission.request.arrival;
    metrics_->OnAdmitted(std::chrono::duration<double>(queued).count());
  }
  const Clock::time_point start = Clock::now();
  absl::StatusOr<StepResult> result = engine_->Step(plan);
  const Clock::time_point end = Clock::now();
  Deliver(result.ok() ? scheduler_.Update(*result, end) : scheduler_.Fail(result.status()));
  if (result.ok()) scheduler_.ObserveStepTime(std::chrono::duration<double>(end - start).count());
  if (metrics_ != nullptr && !plan.chunks.empty()) {
    const SchedulerStats s = scheduler_.stats();
    metrics_->OnStep({.batch_size = static_cast<int64_t>(plan.chunks.size()),
                      .tokens = s.tokens_last_step,
                      .preemptions = s.preemptions - last_stats_.preemptions,
                      .step_seconds = std::chrono::duration<double>(end - start).count(),
                      .prefix_queries = s.prefix_queries - last_stats_.prefix_queries,
                      .prefix_hits = s.prefix_hits - last_stats_.prefix_hits,
                      .worker = result.ok() ? result->timings : StepTimings{}});
    last_stats_ = s;
  }
}

void Batcher::PublishState() {
  if (metrics_ == nullptr) return;
  const SchedulerStats s = scheduler_.stats();
  const QueueState state{.waiting = s.waiting, .running = s.running,
                         .free_blocks = s.free_blocks, .cached_blocks = s.cached_blocks};
  if (published_ == state) return;
  published_ = state;
  metrics_->OnState(state);
}

void Batcher::Loop() {
  while (DrainInbox()) {
    if (scheduler_.HasWork()) RunStep();
    PublishState();
  }
  FailOpen(absl::UnavailableError("the server is shutting down"));
}

}  // namespace fms
