// The HTTP port (PORT, default 3000): GET /health and GET /metrics for
// Kubernetes probes and Prometheus scrapes, nothing else. Served by civetweb
// (the web server prometheus-cpp's own exposer uses) with a pool of threads
// and a total time limit per request, so idle or slow ("slow-loris") clients
// cannot hold up a probe: each is dropped after kRequestTimeoutMs.

#ifndef FMS_SERVER_HTTP_SERVER_H_
#define FMS_SERVER_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct mg_context;

namespace fms {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Answers GET `path` (no query string); 404 for other paths is the handler's.
// Called on civetweb's threads, several at once.
using HttpHandler = std::function<HttpResponse(const std::string& path)>;

struct HttpServerOptions {
  // Connections served at once; more wait in the accept queue. Above the
  // number of hostile clients a pod should survive (tests use 100).
  int threads = 128;
  // A request must arrive whole within this time, counted from its first
  // byte, or the connection is closed; idle connections too.
  int request_timeout_ms = 2000;
};

class HttpServer {
 public:
  // Listens on 0.0.0.0:`port` (0 picks one) and serves until destroyed.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(int port, HttpHandler handler,
                                                           HttpServerOptions options = {});
  ~HttpServer();

  int port() const { return port_; }

 private:
  explicit HttpServer(std::unique_ptr<HttpHandler> handler) : handler_(std::move(handler)) {}

  std::unique_ptr<HttpHandler> handler_;  // civetweb's callback data.
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace fms

#endif  // FMS_SERVER_HTTP_SERVER_H_
