// XV_TILE_FN: the qualifier of the tile functions in this folder, shared by the CUDA kernels (nvcc:
// __host__ __device__, forced inline) and the CPU tests that run them (g++: inline).
#pragma once

#if defined(__CUDACC__)
#define XV_TILE_FN __host__ __device__ __forceinline__
#else
#define XV_TILE_FN inline
#endif
