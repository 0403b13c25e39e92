#include "kernels/cpu/runtime.h"

#include <cblas.h>
#include <malloc.h>

#include <vector>

namespace xv::cpu {

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 256 << 20);  // blocks below 256 MiB come from the heap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);    // and stay there up to 1 GiB of free space
}

void warm_up_blas() {
  // One GEMM large enough that OpenBLAS splits it over its threads.
  constexpr int n = 256;
  std::vector<float> a(size_t(n) * n, 1.0f);
  std::vector<float> c(size_t(n) * n, 0.0f);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, a.data(), n, 0.0f, c.data(), n);
}

}  // namespace xv::cpu
