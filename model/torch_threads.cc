#include "model/torch_threads.h"

#include <ATen/Parallel.h>
#include <omp.h>
#include <unistd.h>

namespace fms {

int ConfigureTorchThreads(const TorchThreadOptions& options) {
  int intra = options.intra_op_threads;
  if (intra <= 0) intra = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  at::set_num_threads(intra > 0 ? intra : 1);
  // Throws once inter-op work has started; only the first call may set it.
  static const bool inter_op_set = [&] {
    if (options.inter_op_threads > 0) {
      at::set_num_interop_threads(options.inter_op_threads);
    }
    return true;
  }();
  (void)inter_op_set;
  return at::get_num_threads();
}

void SerialTorchOnThisThread() {
  // LibTorch applies its process-wide count to a thread on that thread's
  // first query; after it, the thread's own setting sticks.
  (void)at::get_num_threads();
  omp_set_num_threads(1);
}

}  // namespace fms
