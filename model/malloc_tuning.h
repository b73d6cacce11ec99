// glibc malloc settings for a process that runs the model.
//
// LibTorch's CPU allocator takes every tensor from malloc. By default glibc
// serves large blocks with fresh mmap()s and gives them back on free, so the
// per-step temporaries of a forward (gathered keys, logits, MLP activations:
// tens of MB at batch 32) page-fault in again on every step; measured on the
// 110M model at batch 32, that cost a third of the decode step.
// TuneMallocForModel keeps them in the heap for reuse instead.

#ifndef FMS_MODEL_MALLOC_TUNING_H_
#define FMS_MODEL_MALLOC_TUNING_H_

namespace fms {

// Call once at process start, before the model allocates.
void TuneMallocForModel();

}  // namespace fms

#endif  // FMS_MODEL_MALLOC_TUNING_H_
