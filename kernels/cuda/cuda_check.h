// The CUDA backend's one error policy: every CUDA runtime and cuBLASLt call goes through XV_CUDA_CHECK /
// XV_CUBLAS_CHECK, every kernel launch is followed by XV_CUDA_CHECK_LAUNCH(); a failure throws xv::Error
// naming the call, file:line and the library's message. Usable from .cu and .cpp files alike: nvcc's front end
// cannot parse core/error.h (fmt's consteval format strings), so the throwing functions are declared here and
// defined in cuda_check.cpp, which g++ compiles.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

namespace xv::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line);
// The same, saying what the call was doing (the collective and the rank, say).
[[noreturn]] void throw_cuda_error_at(cudaError_t e, const char* call, const char* where, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line);
// For .cu code that must refuse something (it cannot format an xv::Error itself): throws xv::Error(what).
[[noreturn]] void throw_error(const char* what);

inline const char* c_str(const char* s) { return s; }
template <class S>
inline const char* c_str(const S& s) { return s.c_str(); }

}  // namespace xv::cuda

#define XV_CUDA_CHECK(call)                                                       \
  do {                                                                            \
    const cudaError_t xv_cuda_err_ = (call);                                      \
    if (xv_cuda_err_ != cudaSuccess)                                              \
      ::xv::cuda::throw_cuda_error(xv_cuda_err_, #call, __FILE__, __LINE__);      \
  } while (0)

// XV_CUDA_CHECK with a context string (const char* or std::string) for the message.
#define XV_CUDA_CHECK_AT(call, where)                                                      \
  do {                                                                                     \
    const cudaError_t xv_cuda_err_ = (call);                                               \
    if (xv_cuda_err_ != cudaSuccess)                                                       \
      ::xv::cuda::throw_cuda_error_at(xv_cuda_err_, #call, ::xv::cuda::c_str(where), __FILE__, __LINE__); \
  } while (0)

#define XV_CUBLAS_CHECK(call)                                                     \
  do {                                                                            \
    const cublasStatus_t xv_cublas_st_ = (call);                                  \
    if (xv_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                   \
      ::xv::cuda::throw_cublas_error(xv_cublas_st_, #call, __FILE__, __LINE__);   \
  } while (0)

// After a <<<...>>> launch: a bad configuration (too many threads, too much shared memory, no kernel image for
// this GPU) shows here; faults inside the kernel surface at the next synchronising call.
#define XV_CUDA_CHECK_LAUNCH()                                                    \
  do {                                                                            \
    const cudaError_t xv_cuda_err_ = cudaGetLastError();                          \
    if (xv_cuda_err_ != cudaSuccess)                                              \
      ::xv::cuda::throw_cuda_error(xv_cuda_err_, "kernel launch", __FILE__, __LINE__); \
  } while (0)
