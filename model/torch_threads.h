// Explicit LibTorch thread configuration for a worker.
//
// On this project's CPUs the intra-op pool of a wheel-built LibTorch has been
// seen to default to one thread, while several worker processes each taking all
// cores oversubscribe (libtorch-build-notes.md section 6). Every process that
// runs model code calls ConfigureTorchThreads first thing, on the thread that
// will run the model.

#ifndef FMS_MODEL_TORCH_THREADS_H_
#define FMS_MODEL_TORCH_THREADS_H_

namespace fms {

struct TorchThreadOptions {
  // Intra-op threads (at::set_num_threads); 0 means all online cores.
  int intra_op_threads = 0;
  // Inter-op threads; settable once per process, before any parallel work.
  // 0 leaves LibTorch's default.
  int inter_op_threads = 1;
};

// Applies `options` and returns the intra-op thread count now in force.
int ConfigureTorchThreads(const TorchThreadOptions& options);

// LibTorch ops on the calling thread run serially from now on (OpenMP's
// count is per thread; the process-wide settings stay). For threads beside
// the compute thread (an RPC thread loading an adapter): a thread that opens
// a parallel region gets an OpenMP pool of its own, and with more pooled
// threads than cores libgomp stops spinning between regions, which made
// every region of a decode step wait for a futex wake-up.
void SerialTorchOnThisThread();

}  // namespace fms

#endif  // FMS_MODEL_TORCH_THREADS_H_
