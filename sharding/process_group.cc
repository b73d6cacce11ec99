#include "sharding/process_group.h"

// c10d's process groups are compiled into the wheel's libtorch; their headers
// are guarded by these macros. Gloo's own headers come from Debian's
// libgloo-dev (declarations only; docs/development.md explains why that is safe).
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef FMS_CUDA
#define USE_C10D_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fms {
namespace {

class C10dCollectives : public Collectives {
 public:
  C10dCollectives(c10::intrusive_ptr<c10d::Store> store,
                  c10::intrusive_ptr<c10d::Backend> backend, int rank, int world_size)
      : store_(std::move(store)), backend_(std::move(backend)),
        rank_(rank), world_size_(world_size) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  void AllReduceSum(at::Tensor& tensor) override {
    std::vector<at::Tensor> tensors = {tensor};
    Wait("all-reduce", [&] { return backend_->allreduce(tensors); });
  }

  at::Tensor GatherColumnsToRank0(const at::Tensor& part) override {
    std::vector<at::Tensor> inputs = {part};
    std::vector<std::vector<at::Tensor>> outputs;
    if (rank_ == 0) {
      outputs.emplace_back();
      for (int r = 0; r < world_size_; ++r) outputs[0].push_back(at::empty_like(part));
    }
    Wait("gather", [&] {
      return backend_->gather(outputs, inputs, c10d::GatherOptions{.rootRank = 0});
    });
    if (rank_ != 0) return at::Tensor();
    return at::cat(outputs[0], /*dim=*/1);  // [R, world * n]
  }

 private:
  // Runs one collective to completion; a failure ends the process.
  template <typename Start>
  void Wait(const char* what, Start start) {
    try {
      start()->wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fms-worker rank %d: %s failed: %s\n", rank_, what, e.what());
      std::fflush(stderr);
      std::_Exit(kCollectiveFailedExit);
    }
  }

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  int rank_;
  int world_size_;
};

c10::intrusive_ptr<c10d::Backend> MakeBackend(const ProcessGroupOptions& o,
                                              const c10::intrusive_ptr<c10d::Store>& store,
                                              std::chrono::milliseconds timeout) {
  if (o.device.is_cuda()) {
#ifdef FMS_CUDA
    c10::cuda::set_device(o.device.index());
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.world_size, options);
#else
    throw std::runtime_error("this fms-worker was built without CUDA (--config=cuda)");
#endif
  }
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // Every rank runs on this machine: connections go over the loopback of
  // MASTER_ADDR's interface.
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.master_addr));
  options->threads = 1;  // One collective at a time: the compute thread's.
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world_size, options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Collectives>> JoinProcessGroup(
    const ProcessGroupOptions& o) {
  const auto timeout = std::chrono::milliseconds(absl::ToInt64Milliseconds(o.timeout));
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(o.master_port);
    store_options.isServer = o.rank == 0;
    store_options.numWorkers = o.world_size;
    store_options.waitWorkers = false;
    store_options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_options);
    auto backend = MakeBackend(o, store, timeout);
    return std::make_unique<C10dCollectives>(store, backend, o.rank, o.world_size);
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (const auto newline = what.find('\n'); newline != std::string::npos) {
      what.resize(newline);  // c10 appends a C++ stack trace.
    }
    return absl::UnavailableError(absl::StrCat("cannot join the process group at ",
                                               o.master_addr, ":", o.master_port, " as rank ",
                                               o.rank, " of ", o.world_size, ": ", what));
  }
}

}  // namespace fms
