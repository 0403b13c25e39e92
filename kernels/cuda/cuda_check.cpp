// The throwing half of cuda_check.h (compiled by g++: it formats through core/error.h).
#include "kernels/cuda/cuda_check.h"

#include "core/error.h"

namespace xv::cuda {

void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line) {
  fail("CUDA error in {} at {}:{}: {} ({})", call, file, line, cudaGetErrorString(e), cudaGetErrorName(e));
}

void throw_cuda_error_at(cudaError_t e, const char* call, const char* where, const char* file, int line) {
  fail("CUDA error in {} ({}) at {}:{}: {} ({})", call, where, file, line, cudaGetErrorString(e), cudaGetErrorName(e));
}

void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line) {
  fail("cuBLASLt error in {} at {}:{}: {} ({})", call, file, line, cublasLtGetStatusString(s),
       cublasLtGetStatusName(s));
}

void throw_error(const char* what) { throw Error(what); }

}  // namespace xv::cuda
