// A minimal HTTP/1.1 server for GET /health and GET /metrics on PORT: one
// thread, one request per connection, bounded request size. Enough for
// Kubernetes probes and Prometheus scrapes; nothing else is served.

#ifndef FMS_SERVER_HTTP_SERVER_H_
#define FMS_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace fms {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Answers GET `path` (no query string); 404 for other paths is the handler's.
using HttpHandler = std::function<HttpResponse(const std::string& path)>;

class HttpServer {
 public:
  // Listens on 0.0.0.0:`port` (0 picks one) and serves until destroyed.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(int port, HttpHandler handler);
  ~HttpServer();

  int port() const { return port_; }

 private:
  HttpServer(int fd, int port, HttpHandler handler);
  void Loop();
  void Serve(int client);

  const int fd_;
  const int port_;
  const HttpHandler handler_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace fms

#endif  // FMS_SERVER_HTTP_SERVER_H_
