#include "server/request_log.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace fms {
namespace {

std::atomic<bool> json_output{false};

spdlog::level::level_enum ToSpdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarn: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

void ConfigureLogging(bool json, const std::string& level) {
  json_output = json;
  spdlog::set_level(spdlog::level::from_str(level == "warn" ? "warning" : level));
  // JSON lines are built whole by LogEvent (with time and level inside).
  spdlog::set_pattern(json ? "%v" : "[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
}

void LogEvent(LogLevel level, const std::string& message, const std::string& fields_json_object) {
  const auto spd_level = ToSpdlog(level);
  if (!spdlog::should_log(spd_level)) return;
  nlohmann::json fields = nlohmann::json::parse(fields_json_object, nullptr, false);
  if (!fields.is_object()) fields = nlohmann::json::object();
  if (json_output) {
    fields["message"] = message;
    fields["level"] = spdlog::level::to_string_view(spd_level).data();
    fields["timestamp"] = absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone());
    spdlog::log(spd_level, "{}", fields.dump());
    return;
  }
  std::string text = message;
  for (const auto& [key, value] : fields.items()) {
    absl::StrAppend(&text, " ", key, "=", value.is_string() ? value.get<std::string>() : value.dump());
  }
  spdlog::log(spd_level, "{}", text);
}

void LogRequest(const RequestLogLine& line) {
  nlohmann::json fields = {{"method", line.method},
                           {"input_tokens", line.input_tokens},
                           {"generated_tokens", line.generated_tokens},
                           {"stop_reason", line.stop_reason},
                           {"total_time_s", line.seconds}};
  if (!line.correlation_id.empty()) fields["correlation_id"] = line.correlation_id;
  if (!line.error.empty()) fields["error"] = line.error;
  LogLevel level = LogLevel::kInfo;
  if (line.stop_reason == "CANCELLED" || line.stop_reason == "TOKEN_LIMIT") level = LogLevel::kWarn;
  if (line.stop_reason == "ERROR") level = LogLevel::kError;
  LogEvent(level,
           absl::StrCat(line.method, " generated ", line.generated_tokens, " tokens before ",
                        line.stop_reason),
           fields.dump());
}

}  // namespace fms
