#include "sharding/worker_group.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>


#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "batching/step_codec.h"
#include "proto/worker.grpc.pb.h"
#include "sharding/cpu_budget.h"

extern char** environ;

namespace fms {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxSocketPath = 107;

// The environment of rank `rank`: ours, with its thread counts.
std::vector<std::string> WorkerEnvironment(int threads) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    if (entry.rfind("OMP_NUM_THREADS=", 0) == 0 || entry.rfind("MKL_NUM_THREADS=", 0) == 0 ||
        entry.rfind("FMS_SERVER_PID=", 0) == 0) {
      continue;
    }
    env.push_back(entry);
  }
  // The worker checks that its parent is still this process (worker_main.cc).
  env.push_back(absl::StrCat("FMS_SERVER_PID=", getpid()));
  env.push_back(absl::StrCat("OMP_NUM_THREADS=", threads));
  env.push_back(absl::StrCat("MKL_NUM_THREADS=", threads));
  return env;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return absl::StrCat("status ", status);
}

}  // namespace

absl::StatusOr<std::string> FindWorkerBinary() {
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("FMS_WORKER_BINARY")) candidates.emplace_back(env);
  if (!error) {
    candidates.push_back(exe.parent_path() / "fms-worker");
    candidates.push_back(exe.parent_path().parent_path() / "sharding" / "fms-worker");
    candidates.push_back(exe.string() + ".runfiles/fms_serve/sharding/fms-worker");
  }
  for (const fs::path& path : candidates) {
    if (fs::is_regular_file(path, error)) return path.string();
  }
  return absl::NotFoundError("fms-worker not found; set FMS_WORKER_BINARY");
}

absl::StatusOr<std::unique_ptr<WorkerGroup>> WorkerGroup::Start(
    const WorkerGroupOptions& options) {
  std::unique_ptr<WorkerGroup> group(new WorkerGroup);
  group->options_ = options;
  // The pod's CPU limit, not the node's core count, split over the ranks;
  // or OMP_NUM_THREADS (sharding/cpu_budget.h).
  const int threads = WorkerThreads(CpuBudget(), options.num_shard, getenv("OMP_NUM_THREADS"));
  for (int rank = 0; rank < options.num_shard; ++rank) {
    const std::string socket =
        options.socket_prefix.empty()
            ? absl::StrCat(options.socket_dir, "/rank-", rank, ".sock")
            : absl::StrCat(options.socket_prefix, "-", rank);
    const std::string log = absl::StrCat(options.socket_dir, "/rank-", rank, ".log");
    if (socket.size() > kMaxSocketPath) {  // sockaddr_un.sun_path holds 108 bytes.
      return absl::InvalidArgumentError(absl::StrCat(
          "worker socket path longer than ", kMaxSocketPath, " bytes: ", socket));
    }
    fs::remove(socket);
    std::vector<std::string> args = {
        options.worker_binary, "--model", options.model, "--socket", socket,
        "--rank", absl::StrCat(rank), "--world-size", absl::StrCat(options.num_shard),
        "--threads", absl::StrCat(threads), "--dtype", options.dtype,
        "--max-sequence-length", absl::StrCat(options.max_sequence_length),
        "--block-size",
        absl::StrCat(options.block_size), "--master-addr", options.master_addr,
        "--master-port", absl::StrCat(options.master_port), "--kv-budget-bytes",
        absl::StrCat(options.kv_budget_bytes)};
    std::vector<std::string> env = WorkerEnvironment(threads);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, options.worker_binary.c_str(), &actions, nullptr,
                               Pointers(args).data(), Pointers(env).data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      return absl::InternalError(absl::StrCat("cannot start ", options.worker_binary, ": ",
                                              std::strerror(rc)));
    }
    group->pids_.push_back(pid);
    group->sockets_.push_back(socket);
    group->logs_.push_back(log);
    group->reaped_.push_back(false);
  }
  return group;
}

std::optional<std::string> WorkerGroup::Exited() {
  std::vector<std::string> exited;  // A lost peer often takes the others down too.
  for (size_t rank = 0; rank < pids_.size(); ++rank) {
    int status = 0;
    if (reaped_[rank]) {
      exited.push_back(absl::StrCat("rank ", rank, " exited"));
    } else if (waitpid(pids_[rank], &status, WNOHANG) == pids_[rank]) {
      reaped_[rank] = true;
      std::string line = ReadFile(logs_[rank]);
      while (!line.empty() && line.back() == '\n') line.pop_back();
      exited.push_back(absl::StrCat("rank ", rank, " exited with ", DescribeStatus(status),
                                    line.empty() ? "" : ": ", line));
    }
  }
  if (exited.empty()) return std::nullopt;
  return absl::StrJoin(exited, "; ");
}

absl::Status WorkerGroup::WaitReady(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (size_t rank = 0; rank < sockets_.size(); ++rank) {
    // The socket appears once the worker has loaded its model.
    std::error_code error;
    while (!fs::exists(sockets_[rank], error)) {
      if (auto exited = Exited()) return absl::UnavailableError(*exited);
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat("rank ", rank, " did not start"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    auto stub = worker::WorkerService::NewStub(
        grpc::CreateChannel("unix:" + sockets_[rank], grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_wait_for_ready(true);
    context.set_deadline(absl::ToChronoTime(deadline));
    worker::InfoRequest request;
    request.set_version(kWorkerProtocolVersion);
    worker::InfoResponse response;
    const grpc::Status status = stub->Info(&context, request, &response);
    if (!status.ok()) {
      if (auto exited = Exited()) return absl::UnavailableError(*exited);
      return absl::UnavailableError(absl::StrCat("rank ", rank, ": ", status.error_message()));
    }
  }
  return absl::OkStatus();
}

WorkerGroup::~WorkerGroup() {
  for (size_t rank = 0; rank < pids_.size(); ++rank) {
    if (!reaped_[rank]) kill(pids_[rank], SIGTERM);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (size_t rank = 0; rank < pids_.size(); ++rank) {
    while (!reaped_[rank]) {
      int status = 0;
      if (waitpid(pids_[rank], &status, WNOHANG) == pids_[rank]) {
        reaped_[rank] = true;
      } else if (std::chrono::steady_clock::now() > deadline) {
        kill(pids_[rank], SIGKILL);
        waitpid(pids_[rank], &status, 0);
        reaped_[rank] = true;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
}

}  // namespace fms
