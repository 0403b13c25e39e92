#include "kernels/cpu/runtime.h"

#include <malloc.h>

namespace xv::cpu {

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 256 << 20);  // blocks below 256 MiB come from the heap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);    // and stay there up to 1 GiB of free space
}

}  // namespace xv::cpu
