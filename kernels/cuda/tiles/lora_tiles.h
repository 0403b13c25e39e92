// The tile logic of the fused LoRA kernels (kernels/cuda/lora.cu), as __host__ __device__ functions that the
// kernels call and tests/test_lora_tiles.cpp runs on the CPU, lane by lane and block by block, against the
// reference ops (ops::lora_forward / ops::lora_backward on the CPU backend).
//
//   down (forward):  xa[m][j] = sum_k drop(x)[m][k] A[j][k], for a group of kRanks ranks j at a time: one warp
//                    per row m, lane l summing k = l, l + 32, ... in order, the 32 lane sums combined by a
//                    butterfly (xor 16, 8, 4, 2, 1); dropout recomputed from (seed, m K + k), never stored.
//   dA (backward):   dA[j][k] += sum_m dxa[m][j] drop(x)[m][k]: one thread per column k and rank group, rows m
//                    in order (a fixed-order reduction over the batch).
//   dx (backward):   dx[m][k] += keep(m K + k) ? scale sum_j dxa[m][j] A[j][k] : 0, one thread per element,
//                    ranks in order.
// Without dropout the backward's products are cuBLASLt GEMMs.
#pragma once
#include <cstdint>

#include "kernels/cuda/tiles/tile_fn.h"

namespace xv::lora_tiles {

constexpr int kRanks = 8;  // ranks of one down-projection or dA pass (accumulators in registers)

XV_TILE_FN int rank_groups(int64_t r) { return int((r + kRanks - 1) / kRanks); }

// The dropped-out input element: x / (1 - p) kept, 0 dropped (scale = 1 / (1 - p) as the CPU computes it).
XV_TILE_FN float drop(float x, bool keep, float scale) { return keep ? x * scale : 0.0f; }

// Lane `lane`'s partial sums of the down projection of one row for ranks j0 .. j0 + kRanks - 1 (those < r):
// acc[jj] = sum over k = lane, lane + 32, ... < K of xd(k) * a(j0 + jj, k), in order of k.
template <class XD, class AF>
XV_TILE_FN void down_lane(XD xd, AF a, int64_t K, int64_t r, int64_t j0, int lane, float (&acc)[kRanks]) {
  for (int jj = 0; jj < kRanks; ++jj) acc[jj] = 0.0f;
  for (int64_t k = lane; k < K; k += 32) {
    const float v = xd(k);
    for (int jj = 0; jj < kRanks; ++jj)
      if (j0 + jj < r) acc[jj] += v * a(j0 + jj, k);
  }
}

// dA's column k for ranks j0 ..: acc[jj] = sum over m < M in order of dxa(m, j0 + jj) * xd(m, k).
template <class DXA, class XD>
XV_TILE_FN void da_column(DXA dxa, XD xd, int64_t M, int64_t r, int64_t j0, int64_t k, float (&acc)[kRanks]) {
  for (int jj = 0; jj < kRanks; ++jj) acc[jj] = 0.0f;
  for (int64_t m = 0; m < M; ++m) {
    const float v = xd(m, k);
    for (int jj = 0; jj < kRanks; ++jj)
      if (j0 + jj < r) acc[jj] += dxa(m, j0 + jj) * v;
  }
}

// The input gradient's element (m, k) through the mask: keep ? scale * sum_j dxa(m, j) a(j, k) : 0.
template <class DXA, class AF>
XV_TILE_FN float dx_elem(DXA dxa, AF a, int64_t r, int64_t m, int64_t k, bool keep, float scale) {
  if (!keep) return 0.0f;
  float s = 0.0f;
  for (int64_t j = 0; j < r; ++j) s += dxa(m, j) * a(j, k);
  return s * scale;
}

}  // namespace xv::lora_tiles
