#include "kernels/cpu/blas_core.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace xv::cpu {

const char* blas_core_name() { return openblas_get_corename(); }

void select_blas_core(int argc, char** argv) {
  (void)argc;
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("XV_BLAS_REEXEC")) return;
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (!avx512 || std::strcmp(openblas_get_corename(), "Haswell") != 0) return;
  ::setenv("OPENBLAS_CORETYPE", "SKYLAKEX", 1);
  ::setenv("XV_BLAS_REEXEC", "1", 1);  // never loop
  ::execv("/proc/self/exe", argv);
  // exec failed (no /proc): carry on with the kernels already loaded.
  ::unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace xv::cpu
