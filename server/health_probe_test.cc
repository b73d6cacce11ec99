#include "server/health_probe.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "gtest/gtest.h"
#include "server/http_server.h"

namespace fms {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ParseProbeArgs, ReadsTheServersPortVariablesThenFlags) {
  auto options = ParseProbeArgs({}, FakeEnv({{"GRPC_PORT", "9000"}, {"PORT", "9001"}}));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->mode, ProbeOptions::Mode::kGrpc);
  EXPECT_EQ(options->grpc_port, 9000u);
  EXPECT_EQ(options->http_port, 9001u);
  EXPECT_EQ(options->service, "fmaas.GenerationService");
  options = ParseProbeArgs({"--http", "--port=3001", "--timeout-ms=250", "--service="},
                           FakeEnv({{"PORT", "9001"}}));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->mode, ProbeOptions::Mode::kHttp);
  EXPECT_EQ(options->http_port, 3001u);
  EXPECT_EQ(options->timeout_ms, 250);
  EXPECT_EQ(options->service, "");
}

TEST(ParseProbeArgs, RefusesBadArgumentsAndGrpcOverTls) {
  EXPECT_EQ(ParseProbeArgs({"--port=0"}, FakeEnv({})).status().message(),
            "--port: invalid value '0': expected a port in [1, 65535]");
  EXPECT_EQ(ParseProbeArgs({"--verbose"}, FakeEnv({})).status().message(),
            "unknown argument '--verbose'");
  EXPECT_FALSE(ParseProbeArgs({"--timeout-ms=0"}, FakeEnv({})).ok());
  const auto tls = FakeEnv({{"TLS_CERT_PATH", "/certs/tls.crt"}});
  EXPECT_NE(ParseProbeArgs({}, tls).status().message().find("--http"), std::string::npos);
  EXPECT_TRUE(ParseProbeArgs({"--http"}, tls).ok());
}

class GrpcProbe : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    // gRPC's built-in health service (fms-server's) needs one other service to
    // be polled; an empty generic one answers UNIMPLEMENTED to everything.
    builder.RegisterCallbackGenericService(&generic_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    options_.grpc_port = static_cast<uint32_t>(port_);
  }
  void SetServing(bool serving) {
    server_->GetHealthCheckService()->SetServingStatus("fmaas.GenerationService", serving);
  }
  int port_ = 0;
  grpc::CallbackGenericService generic_;
  std::unique_ptr<grpc::Server> server_;
  ProbeOptions options_;
};

TEST_F(GrpcProbe, PassesOnlyWhenServing) {
  SetServing(false);
  absl::Status status = Probe(options_);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("NOT_SERVING"), std::string::npos) << status;
  SetServing(true);
  EXPECT_TRUE(Probe(options_).ok());
  options_.service = "no.such.Service";
  EXPECT_EQ(Probe(options_).code(), absl::StatusCode::kUnavailable);  // NOT_FOUND from gRPC.
}

TEST_F(GrpcProbe, FailsFastWhenNothingListens) {
  server_->Shutdown();
  server_.reset();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(Probe(options_).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(HttpProbe, FollowsTheStatusCode) {
  int code = 503;
  auto server = HttpServer::Start(0, [&](const std::string& path) {
    return HttpResponse{.status = path == "/health" ? code : 404};
  });
  ASSERT_TRUE(server.ok()) << server.status();
  ProbeOptions options{.mode = ProbeOptions::Mode::kHttp,
                       .http_port = static_cast<uint32_t>((*server)->port())};
  absl::Status status = Probe(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("503"), std::string::npos) << status;
  code = 200;
  EXPECT_TRUE(Probe(options).ok());
}

// A server that accepts connections (the kernel's backlog) but never answers:
// the probe gives up at its timeout instead of hanging the kubelet.
TEST(HttpProbe, GivesUpAtTheTimeout) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{.sin_family = AF_INET, .sin_port = 0,
                      .sin_addr = {.s_addr = htonl(INADDR_LOOPBACK)}};
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ProbeOptions options{.mode = ProbeOptions::Mode::kHttp,
                       .http_port = ntohs(address.sin_port),
                       .timeout_ms = 300};
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(Probe(options).code(), absl::StatusCode::kDeadlineExceeded);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(290));
  EXPECT_LT(took, std::chrono::seconds(2));
  close(fd);
}

}  // namespace
}  // namespace fms
