#include "server/health_probe.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "health.grpc.pb.h"

namespace fms {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status ParsePort(const std::string& value, const std::string& what, uint32_t* port) {
  if (!absl::SimpleAtoi(value, port) || *port < 1 || *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": invalid value '", value, "': expected a port in [1, 65535]"));
  }
  return absl::OkStatus();
}

absl::Status ApplyArg(const std::string& arg, ProbeOptions* options) {
  const size_t eq = arg.find('=');
  const std::string name = arg.substr(0, eq);
  const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
  if (arg == "--grpc") {
    options->mode = ProbeOptions::Mode::kGrpc;
  } else if (arg == "--http") {
    options->mode = ProbeOptions::Mode::kHttp;
  } else if (name == "--host" && !value.empty()) {
    options->host = value;
  } else if (name == "--grpc-port") {
    return ParsePort(value, name, &options->grpc_port);
  } else if (name == "--port") {
    return ParsePort(value, name, &options->http_port);
  } else if (name == "--service" && eq != std::string::npos) {
    options->service = value;
  } else if (name == "--timeout-ms") {
    if (!absl::SimpleAtoi(value, &options->timeout_ms) || options->timeout_ms < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--timeout-ms: invalid value '", value, "': expected an integer >= 1"));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown argument '", arg, "'"));
  }
  return absl::OkStatus();
}

absl::Status ProbeGrpc(const ProbeOptions& options) {
  const std::string target = absl::StrCat(options.host, ":", options.grpc_port);
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(options.timeout_ms));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(options.service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  const std::string what = absl::StrCat("gRPC health of '", options.service, "' at ", target);
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::DeadlineExceededError(
        absl::StrCat(what, ": no answer within ", options.timeout_ms, " ms"));
  }
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(what, ": ", status.error_message()));
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat(
        what, ": ", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
  }
  return absl::OkStatus();
}

int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return std::max<int>(0, static_cast<int>(left.count()));
}

// Waits for `events` on `fd` until `deadline`; false on timeout.
bool WaitFor(int fd, short events, Clock::time_point deadline) {
  pollfd entry{.fd = fd, .events = events, .revents = 0};
  int ready = 0;
  do {
    ready = poll(&entry, 1, RemainingMs(deadline));
  } while (ready < 0 && errno == EINTR);
  return ready > 0;
}

// One GET /health over a fresh connection; returns the status line.
absl::StatusOr<std::string> HttpStatusLine(const ProbeOptions& options,
                                           Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(options.http_port);
  if (int error = getaddrinfo(options.host.c_str(), port.c_str(), &hints, &found); error != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", options.host, ": ",
                                               gai_strerror(error)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addresses(found, freeaddrinfo);
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", strerror(errno)));
  std::unique_ptr<int, void (*)(int*)> closer(new int(fd), [](int* f) { close(*f); delete f; });
  if (connect(fd, found->ai_addr, found->ai_addrlen) != 0 && errno != EINPROGRESS) {
    return absl::UnavailableError(absl::StrCat("connect: ", strerror(errno)));
  }
  if (!WaitFor(fd, POLLOUT, deadline)) return absl::DeadlineExceededError("connect timed out");
  int error = 0;
  socklen_t length = sizeof(error);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
  if (error != 0) return absl::UnavailableError(absl::StrCat("connect: ", strerror(error)));
  const std::string request = absl::StrCat("GET /health HTTP/1.1\r\nHost: ", options.host,
                                           "\r\nConnection: close\r\n\r\n");
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
  }
  std::string reply;
  while (reply.find("\r\n") == std::string::npos) {
    if (!WaitFor(fd, POLLIN, deadline)) return absl::DeadlineExceededError("no reply in time");
    char buffer[512];
    const ssize_t got = recv(fd, buffer, sizeof(buffer), 0);
    if (got <= 0) return absl::UnavailableError("connection closed before a status line");
    reply.append(buffer, static_cast<size_t>(got));
  }
  return reply.substr(0, reply.find("\r\n"));
}

absl::Status ProbeHttp(const ProbeOptions& options) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(options.timeout_ms);
  const std::string what =
      absl::StrCat("HTTP /health at ", options.host, ":", options.http_port);
  absl::StatusOr<std::string> line = HttpStatusLine(options, deadline);
  if (!line.ok()) {
    return absl::Status(line.status().code(), absl::StrCat(what, ": ", line.status().message()));
  }
  // "HTTP/1.1 200 OK"
  const size_t space = line->find(' ');
  if (space == std::string::npos || line->compare(space + 1, 3, "200") != 0) {
    return absl::UnavailableError(absl::StrCat(what, ": ", *line));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ProbeOptions> ParseProbeArgs(const std::vector<std::string>& args,
                                            const EnvLookup& env) {
  ProbeOptions options;
  if (auto port = env("GRPC_PORT"); port.has_value()) {
    if (auto s = ParsePort(*port, "GRPC_PORT", &options.grpc_port); !s.ok()) return s;
  }
  if (auto port = env("PORT"); port.has_value()) {
    if (auto s = ParsePort(*port, "PORT", &options.http_port); !s.ok()) return s;
  }
  for (const std::string& arg : args) {
    if (absl::Status s = ApplyArg(arg, &options); !s.ok()) return s;
  }
  const std::optional<std::string> tls = env("TLS_CERT_PATH");
  if (options.mode == ProbeOptions::Mode::kGrpc && tls.has_value() && !tls->empty()) {
    return absl::InvalidArgumentError(
        "TLS_CERT_PATH is set, so the gRPC port speaks TLS; probe /health with --http");
  }
  return options;
}

absl::Status Probe(const ProbeOptions& options) {
  return options.mode == ProbeOptions::Mode::kGrpc ? ProbeGrpc(options) : ProbeHttp(options);
}

}  // namespace fms
