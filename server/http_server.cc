#include "server/http_server.h"

#include <civetweb.h>

#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace fms {
namespace {

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

// civetweb's request handler: returns the status, which marks it handled.
int Handle(mg_connection* connection, void* data) {
  const auto& handler = *static_cast<const HttpHandler*>(data);
  const mg_request_info* info = mg_get_request_info(connection);
  const HttpResponse response = std::strcmp(info->request_method, "GET") == 0
                                    ? handler(info->local_uri)
                                    : HttpResponse{.status = 405, .body = "only GET\n"};
  const std::string head = absl::StrCat(
      "HTTP/1.1 ", response.status, " ", Reason(response.status),
      "\r\nContent-Type: ", response.content_type,
      "\r\nContent-Length: ", response.body.size(), "\r\nConnection: close\r\n\r\n");
  mg_write(connection, head.data(), head.size());
  mg_write(connection, response.body.data(), response.body.size());
  return response.status;
}

// civetweb logs to stderr unless told otherwise; fms-server's logs are its own.
int Quiet(const mg_connection*, const char*) { return 1; }

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(int port, HttpHandler handler,
                                                              HttpServerOptions options) {
  static std::once_flag initialized;
  std::call_once(initialized, [] { mg_init_library(0); });
  std::unique_ptr<HttpServer> server(
      new HttpServer(std::make_unique<HttpHandler>(std::move(handler))));
  const std::string ports = absl::StrCat("0.0.0.0:", port);
  const std::string threads = absl::StrCat(options.threads);
  const std::string timeout = absl::StrCat(options.request_timeout_ms);
  const std::string queue = absl::StrCat(options.threads);
  const char* config[] = {"listening_ports", ports.c_str(),
                          "num_threads", threads.c_str(),
                          "connection_queue", queue.c_str(),
                          "request_timeout_ms", timeout.c_str(),
                          "enable_keep_alive", "no",
                          nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = Quiet;
  server->context_ = mg_start(&callbacks, nullptr, config);
  if (server->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen on HTTP port ", port));
  }
  mg_set_request_handler(server->context_, "**", Handle, server->handler_.get());
  mg_server_port bound{};
  if (mg_get_server_ports(server->context_, 1, &bound) < 1) {
    return absl::InternalError("civetweb reports no listening port");
  }
  server->port_ = bound.port;
  return server;
}

HttpServer::~HttpServer() {
  if (context_ != nullptr) mg_stop(context_);
}

}  // namespace fms
