// OpenBLAS picks its GEMM kernels once, when the library loads, from the CPU it recognises. Debian 12's
// OpenBLAS (0.3.21) does not know AMD Zen 4 and falls back to its Haswell (AVX2) kernels although the CPU
// has AVX-512; its SkylakeX kernels run about 1.7x faster there. Since the choice happens before main(),
// programs call this first thing: on such a CPU, with OPENBLAS_CORETYPE unset, it sets
// OPENBLAS_CORETYPE=SKYLAKEX and re-executes the program once. Anything else: returns and changes nothing.
#pragma once

namespace xv::cpu {

void select_blas_core(int argc, char** argv);
const char* blas_core_name();

}  // namespace xv::cpu
