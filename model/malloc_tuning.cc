#include "model/malloc_tuning.h"

#include <malloc.h>

namespace fms {

void TuneMallocForModel() {
  // Blocks up to 1 GiB come from the heap, and freed heap memory up to 1 GiB
  // stays mapped for the next step.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace fms
