// StepPlan / StepResult <-> their protobuf messages (proto/worker.proto), for
// the process boundary between the front end and the workers.

#ifndef FMS_BATCHING_STEP_CODEC_H_
#define FMS_BATCHING_STEP_CODEC_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "batching/step.h"
#include "proto/worker.pb.h"

namespace fms {

// Bumped on any incompatible change of proto/worker.proto's meaning.
inline constexpr uint32_t kWorkerProtocolVersion = 4;  // 4: Step became Steps.

worker::StepPlan ToProto(const StepPlan& plan);
worker::StepResult ToProto(const StepResult& result);

// Fail on a version mismatch.
absl::StatusOr<StepPlan> FromProto(const worker::StepPlan& proto);
absl::StatusOr<StepResult> FromProto(const worker::StepResult& proto);

}  // namespace fms

#endif  // FMS_BATCHING_STEP_CODEC_H_
