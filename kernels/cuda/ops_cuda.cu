// Elementwise and row-reduction kernels. One block per row for the norms: C is at most a few thousand,
// so a block-wide reduction in shared memory is enough; rows are independent.
#include "kernels/cuda/ops_cuda.h"

namespace xv::cuda {

namespace {

constexpr int kThreads = 256;

// Block-wide sum of `v` (blockDim.x == kThreads); every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ float total;
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  const float r = total;
  __syncthreads();
  return r;
}

__global__ void rmsnorm_kernel(const float* x, const float* g, float* y, int64_t C, float eps) {
  const float* xr = x + blockIdx.x * C;
  float* yr = y + blockIdx.x * C;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
  const float rstd = rsqrtf(block_sum(ss) / float(C) + eps);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) yr[c] = g[c] * (xr[c] * rstd);
}

__global__ void layernorm_kernel(const float* x, const float* g, const float* b, float* y, int64_t C, float eps) {
  const float* xr = x + blockIdx.x * C;
  float* yr = y + blockIdx.x * C;
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
  const float mean = block_sum(s) / float(C);
  float v = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) v += (xr[c] - mean) * (xr[c] - mean);
  const float rstd = rsqrtf(block_sum(v) / float(C) + eps);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) yr[c] = (xr[c] - mean) * rstd * g[c] + (b ? b[c] : 0.0f);
}

__global__ void l2_normalize_kernel(float* x, int64_t C) {
  float* xr = x + blockIdx.x * C;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
  const float inv = 1.0f / fmaxf(sqrtf(block_sum(ss)), 1e-12f);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) xr[c] *= inv;
}

__global__ void gelu_erf_kernel(float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

__global__ void quick_gelu_kernel(float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

__global__ void swiglu_kernel(const float* gate_up, float* out, int64_t rows, int64_t I) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * I) return;
  const int64_t r = i / I, c = i % I;
  const float g = gate_up[r * 2 * I + c], u = gate_up[r * 2 * I + I + c];
  out[i] = u * (g / (1.0f + expf(-g)));
}

unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

void rmsnorm(const float* x, const float* g, float* y, int64_t rows, int64_t C, float eps, cudaStream_t s) {
  if (rows == 0) return;
  rmsnorm_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, g, y, C, eps);
  cudaCheck(cudaGetLastError());
}

void layernorm(const float* x, const float* g, const float* b, float* y, int64_t rows, int64_t C, float eps,
               cudaStream_t s) {
  if (rows == 0) return;
  layernorm_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, g, b, y, C, eps);
  cudaCheck(cudaGetLastError());
}

void gelu_erf(float* x, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  gelu_erf_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n);
  cudaCheck(cudaGetLastError());
}

void quick_gelu(float* x, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  quick_gelu_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n);
  cudaCheck(cudaGetLastError());
}

void swiglu(const float* gate_up, float* out, int64_t rows, int64_t I, cudaStream_t s) {
  if (rows * I == 0) return;
  swiglu_kernel<<<blocks_for(rows * I), kThreads, 0, s>>>(gate_up, out, rows, I);
  cudaCheck(cudaGetLastError());
}

void l2_normalize(float* x, int64_t rows, int64_t C, cudaStream_t s) {
  if (rows == 0) return;
  l2_normalize_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, C);
  cudaCheck(cudaGetLastError());
}

}  // namespace xv::cuda
