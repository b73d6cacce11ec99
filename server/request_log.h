// Server logs: spdlog as text, or one JSON object per line (JSON_OUTPUT), at
// LOG_LEVEL; and TGIS's one line per finished request, with the caller's
// x-correlation-id gRPC metadata.

#ifndef FMS_SERVER_REQUEST_LOG_H_
#define FMS_SERVER_REQUEST_LOG_H_

#include <cstdint>
#include <string>

namespace fms {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Call once at start-up: `level` is trace, debug, info, warn or error.
void ConfigureLogging(bool json, const std::string& level);

// A log line with structured fields (JSON: top-level keys; text: key=value).
void LogEvent(LogLevel level, const std::string& message,
              const std::string& fields_json_object = "{}");

struct RequestLogLine {
  std::string method;          // Generate or GenerateStream.
  std::string correlation_id;  // x-correlation-id, empty when absent.
  uint32_t input_tokens = 0;
  uint32_t generated_tokens = 0;
  std::string stop_reason;     // StopReason name, or ERROR.
  double seconds = 0;
  std::string error;           // When stop_reason is ERROR.
};

// Info; warn for CANCELLED and TOKEN_LIMIT; error for ERROR (as TGIS).
void LogRequest(const RequestLogLine& line);

}  // namespace fms

#endif  // FMS_SERVER_REQUEST_LOG_H_
