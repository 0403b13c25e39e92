// Device-side traits shared by the kernels (no kernels, no launches here): element load/store between f32 and
// the storage types (float, __nv_bfloat16, __half) with core/dtype.h's exact rounding; strided matrix and
// vector references; the dropout hash; deterministic warp and block reductions; the host dtype dispatch that
// picks a kernel's template instantiation. Included by the .cu files only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/cuda_kernels.h"

namespace xv::cuda {

// ---- Bit-exact conversions (core/dtype.h / dtype.cpp, line for line) ------------------------------------
// Host and device share them, so a cast on the GPU gives the cpu's bits (NaN payloads included).

__host__ __device__ inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
__host__ __device__ inline float f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

__host__ __device__ inline float bf16_bits_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

__host__ __device__ inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                             // round to nearest even
  return uint16_t(u >> 16);
}

__host__ __device__ inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      u = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  return f32_from_bits(u);
}

__host__ __device__ inline uint16_t f32_to_f16_bits(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // overflow (>= 65520 rounds to inf) and inf
  if (a < 0x38800000u) {                        // below the smallest normal 2^-14: subnormal or zero
    const float scaled = f32_from_bits(a) * 16777216.0f;  // exact (power of two)
    const float r = rintf(scaled);                        // to nearest, ties to even
    return sign | uint16_t(r);
  }
  const uint32_t exp = ((a >> 23) - 127 + 15);
  const uint32_t man = a & 0x7fffffu;
  uint32_t h = (exp << 10) | (man >> 13);
  const uint32_t rest = man & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // carries into the exponent correctly
  return sign | uint16_t(h);
}

// ---- Element load / store ----------------------------------------------------------------------------------
using bf16 = __nv_bfloat16;
using f16 = __half;

template <class T>
inline constexpr bool is_storage_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, f16>;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return bf16_bits_to_f32(__bfloat16_as_ushort(v)); }
__device__ __forceinline__ float to_f32(f16 v) { return f16_bits_to_f32(__half_as_ushort(v)); }

template <class T>
__device__ __forceinline__ T from_f32(float f) {
  if constexpr (std::is_same_v<T, float>) return f;
  else if constexpr (std::is_same_v<T, bf16>) return __ushort_as_bfloat16(f32_to_bf16_bits(f));
  else return __ushort_as_half(f32_to_f16_bits(f));
}

// Reads element p as f32 / stores f32 into p in p's dtype.
template <class T>
__device__ __forceinline__ float ld(const T* p) {
  return to_f32(*p);
}
template <class T>
__device__ __forceinline__ void st(T* p, float v) {
  *p = from_f32<T>(v);
}

// A value of one storage type as another: the same bits when the types agree (a pure copy), else through f32
// with core/dtype.h's rounding. gather_rows, copy_rows and im2col use it so data movement is bit-exact.
template <class TD, class TS>
__device__ __forceinline__ TD cast_elem(TS v) {
  if constexpr (std::is_same_v<TD, TS>) return v;
  else return from_f32<TD>(to_f32(v));
}

// ---- Strided operands ------------------------------------------------------------------------------------
// A row-major matrix: rows `stride` elements apart (T const for inputs).
template <class T>
struct Mat {
  T* p = nullptr;
  int64_t stride = 0;
  __device__ __forceinline__ T* row(int64_t r) const { return p + r * stride; }
};
// A vector of n elements stored in a view of any shape (a bias of (1, N) or (N, 1), say): element i is at
// row i / cols, column i % cols.
template <class T>
struct Vec {
  T* p = nullptr;
  int64_t cols = 0, stride = 0;
  bool contiguous = true;
  __device__ __forceinline__ T* at(int64_t i) const {
    return contiguous ? p + i : p + (i / cols) * stride + i % cols;
  }
};

template <class T>
Mat<T> mat(const DMat& m) {
  return Mat<T>{static_cast<T*>(m.p), m.stride};
}
template <class T>
Vec<T> vec(const DMat& m) {
  return Vec<T>{static_cast<T*>(m.p), m.cols, m.stride, m.contiguous()};
}

// ---- The dropout keep mask (kernels/cpu/rows_cpu.cpp: xv::cpu::dropout_keep, line for line) ---------------
__host__ __device__ inline bool dropout_keep(uint64_t seed, uint64_t i, float p) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return double(z >> 11) * (1.0 / 9007199254740992.0) >= double(p);
}

// ---- Deterministic reductions ----------------------------------------------------------------------------
// A butterfly (xor) warp reduction gives every lane the same bits (each step adds the same two values in
// either order), and the block combines the warps' values in warp order: the same inputs and block size give
// the same result on every run.
struct SumOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Every thread of the block (kThreads of them, a multiple of 32) gets the reduction of all threads' v.
template <int kThreads, class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  constexpr int kWarps = kThreads / 32;
  __shared__ T warp_vals[kWarps];
  v = warp_reduce(v, op);
  if (threadIdx.x % 32 == 0) warp_vals[threadIdx.x / 32] = v;
  __syncthreads();
  T r = warp_vals[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, warp_vals[w]);
  __syncthreads();  // the next call may overwrite warp_vals
  return r;
}

// ---- Launch helpers ---------------------------------------------------------------------------------------
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n items with `threads` per block (capped; the loop covers the rest).
inline unsigned grid_for(int64_t n, int threads) {
  return unsigned(std::min<int64_t>(ceil_div(n, threads), int64_t(1) << 20));
}

// ---- Host dtype dispatch: calls f(Tag<T>{}) with T the storage type of dt ------------------------------
template <class T>
struct Tag {
  using type = T;
};

template <class F>
void with_type(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f(Tag<float>{}); return;
    case DType::BF16: f(Tag<bf16>{}); return;
    case DType::F16: f(Tag<f16>{}); return;
    default: throw_error("cuda backend: internal error: a kernel dispatched on a non-floating dtype");
  }
}
template <class F>
void with_types(DType a, DType b, F&& f) {
  with_type(a, [&](auto ta) { with_type(b, [&](auto tb) { f(ta, tb); }); });
}
template <class F>
void with_types(DType a, DType b, DType c, F&& f) {
  with_type(a, [&](auto ta) { with_type(b, [&](auto tb) { with_type(c, [&](auto tc) { f(ta, tb, tc); }); }); });
}

// The dtype an absent operand dispatches on (its kernel code never touches it).
inline DType dt_or_f32(const DMat& m) { return m.present ? m.dt : DType::F32; }

}  // namespace xv::cuda
