// The reductions of the fused distillation loss (kernels/cuda/distill_loss.cu) as __host__ __device__
// functions: the kernel calls them per thread, tests/test_lora_tiles.cpp runs them block by block on the CPU
// against ops::distill_loss. Block b covers elements [b kBlock, (b + 1) kBlock) (the CPU's mse_loss blocks);
// thread i of kThreads sums its elements i, i + kThreads, ... in f64; the block's partials are combined by the
// kernel's fixed tree and the blocks summed on the host in block order.
#pragma once
#include <cstdint>

#include "kernels/cuda/tiles/tile_fn.h"

namespace xv::loss_tiles {

constexpr int64_t kBlock = 4096;
constexpr int kThreads = 256;

XV_TILE_FN int64_t blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }

// The gradient's factor: 2 weight / n in f32, as the CPU rounds it.
XV_TILE_FN float grad_scale(float weight, int64_t n) { return float(2.0 * double(weight) / double(n)); }

// Thread `thread`'s f64 partial sums of (s_en - t)^2 and (s_xx - t)^2 over block `blk`; grad(i, g_en, g_xx)
// receives each element's gradient increments gscale (s - t) (added to ds by the caller).
template <class LD, class G>
XV_TILE_FN void thread_partials(LD load, int64_t n, int64_t blk, int thread, float gscale, double* en, double* xx,
                                G grad) {
  const int64_t i1 = (blk + 1) * kBlock < n ? (blk + 1) * kBlock : n;
  double a = 0.0, b = 0.0;
  for (int64_t i = blk * kBlock + thread; i < i1; i += kThreads) {
    float se, sx, t;
    load(i, &se, &sx, &t);
    const double de = double(se) - double(t), dx = double(sx) - double(t);
    a += de * de;
    b += dx * dx;
    grad(i, gscale * (se - t), gscale * (sx - t));
  }
  *en = a;
  *xx = b;
}

}  // namespace xv::loss_tiles
