// CUDA implementations of a subset of kernels/ops.h over device buffers (f32 here; bf16 storage comes
// with the GPU training path). Each op matches its CPU reference in kernels/cpu; tests/test_cuda_ops.cpp
// compares them where a GPU is present.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

// cudaCheck(expr): aborts with file and line on a CUDA error (llm.c style; one macro per library).
#define cudaCheck(expr)                                                                              \
  do {                                                                                               \
    cudaError_t err_ = (expr);                                                                       \
    if (err_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err_), __FILE__, __LINE__, \
                   cudaGetErrorString(err_));                                                        \
      std::exit(1);                                                                                  \
    }                                                                                                \
  } while (0)

namespace xv::cuda {

// Number of visible CUDA devices (0 when there is no driver or no GPU; never aborts).
int device_count();

// Same contracts and shapes as the CPU ops of the same name (kernels/ops.h); pointers are device memory.
void rmsnorm(const float* x, const float* g, float* y, int64_t rows, int64_t C, float eps, cudaStream_t s = nullptr);
void layernorm(const float* x, const float* g, const float* b, float* y, int64_t rows, int64_t C, float eps,
               cudaStream_t s = nullptr);
void gelu_erf(float* x, int64_t n, cudaStream_t s = nullptr);
void quick_gelu(float* x, int64_t n, cudaStream_t s = nullptr);
void swiglu(const float* gate_up, float* out, int64_t rows, int64_t I, cudaStream_t s = nullptr);
void l2_normalize(float* x, int64_t rows, int64_t C, cudaStream_t s = nullptr);

}  // namespace xv::cuda
