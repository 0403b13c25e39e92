// The fused low-rank path of LoRA (kernels/ops.h: lora_forward, lora_backward) on a GPU: the kernels that
// read x once with its dropout mask recomputed from the seed (never stored), around the cuBLASLt products that
// cuda_backend.cpp issues (y += scaling xa B^T, dB, dxa, and the dropout-free dA, dx). The tile logic is
// kernels/cuda/tiles/lora_tiles.h (tests/test_lora_tiles.cpp runs it on the CPU); f32 accumulation, inputs and
// outputs in any floating dtype.
#include <cmath>

#include "kernels/cuda/cuda_traits.cuh"
#include "kernels/cuda/tiles/lora_tiles.h"

namespace xv::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kR = lora_tiles::kRanks;

// xa (M, r) = drop(x) A^T for the rank group blockIdx.y: one warp per row (grid-stride over rows).
template <class TX, class TA, class TO>
__global__ void __launch_bounds__(kThreads) lora_down_kernel(Mat<const TX> x, int64_t M, int64_t K,
                                                             Mat<const TA> A, int64_t r, Mat<TO> xa, uint64_t seed,
                                                             float p, float scale, bool drop) {
  const int lane = threadIdx.x % 32;
  const int64_t j0 = int64_t(blockIdx.y) * kR;
  const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
  for (int64_t m = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; m < M; m += warps) {
    const TX* xr = x.row(m);
    auto xd = [&](int64_t k) {
      const float v = ld(xr + k);
      return drop ? lora_tiles::drop(v, dropout_keep(seed, uint64_t(m * K + k), p), scale) : v;
    };
    auto a = [&](int64_t j, int64_t k) { return ld(A.row(j) + k); };
    float acc[kR];
    lora_tiles::down_lane(xd, a, K, r, j0, lane, acc);
#pragma unroll
    for (int jj = 0; jj < kR; ++jj) acc[jj] = warp_reduce(acc[jj], SumOp{});
    if (lane < kR && j0 + lane < r) {
      float v = acc[0];
#pragma unroll
      for (int jj = 1; jj < kR; ++jj)
        if (lane == jj) v = acc[jj];
      st(xa.row(m) + j0 + lane, v);
    }
  }
}

// dA (r, K) += dxa^T drop(x): thread per column k of the rank group blockIdx.y, rows in order.
template <class TX, class TG, class TD>
__global__ void __launch_bounds__(kThreads) lora_da_kernel(Mat<const TX> x, int64_t M, int64_t K,
                                                           Mat<const TG> dxa, int64_t r, Mat<TD> dA, uint64_t seed,
                                                           float p, float scale) {
  const int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= K) return;
  const int64_t j0 = int64_t(blockIdx.y) * kR;
  auto xd = [&](int64_t m, int64_t kk) {
    return lora_tiles::drop(ld(x.row(m) + kk), dropout_keep(seed, uint64_t(m * K + kk), p), scale);
  };
  auto g = [&](int64_t m, int64_t j) { return ld(dxa.row(m) + j); };
  float acc[kR];
  lora_tiles::da_column(g, xd, M, r, j0, k, acc);
#pragma unroll
  for (int jj = 0; jj < kR; ++jj)
    if (j0 + jj < r) {
      TD* d = dA.row(j0 + jj) + k;
      st(d, ld(d) + acc[jj]);
    }
}

// dx (M, K) += keep ? scale dxa A : 0, thread per element.
template <class TG, class TA, class TD>
__global__ void __launch_bounds__(kThreads) lora_dx_kernel(Mat<const TG> dxa, Mat<const TA> A, int64_t r, int64_t M,
                                                           int64_t K, Mat<TD> dx, uint64_t seed, float p,
                                                           float scale) {
  const int64_t n = M * K;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    const int64_t m = i / K, k = i % K;
    auto g = [&](int64_t mm, int64_t j) { return ld(dxa.row(mm) + j); };
    auto a = [&](int64_t j, int64_t kk) { return ld(A.row(j) + kk); };
    const bool keep = dropout_keep(seed, uint64_t(i), p);
    if (!keep) continue;
    TD* d = dx.row(m) + k;
    st(d, ld(d) + lora_tiles::dx_elem(g, a, r, m, k, keep, scale));
  }
}

}  // namespace

void lora_down(const Ctx& c, const DMat& x, const DMat& A, const DMat& xa, uint64_t seed, float p, float scale,
               bool drop) {
  if (x.rows == 0 || A.rows == 0) return;
  const dim3 grid(unsigned(std::min<int64_t>(ceil_div(x.rows, kThreads / 32), 65535)),
                  unsigned(lora_tiles::rank_groups(A.rows)));
  with_types(x.dt, A.dt, xa.dt, [&](auto tx, auto ta, auto to) {
    using TX = typename decltype(tx)::type;
    using TA = typename decltype(ta)::type;
    using TO = typename decltype(to)::type;
    lora_down_kernel<TX, TA, TO><<<grid, kThreads, 0, c.stream>>>(mat<const TX>(x), x.rows, x.cols, mat<const TA>(A),
                                                                  A.rows, mat<TO>(xa), seed, p, scale, drop);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void lora_da(const Ctx& c, const DMat& x, const DMat& dxa, const DMat& dA, uint64_t seed, float p, float scale) {
  if (x.rows == 0 || dA.rows == 0) return;
  const dim3 grid(unsigned(ceil_div(x.cols, kThreads)), unsigned(lora_tiles::rank_groups(dA.rows)));
  with_types(x.dt, dxa.dt, dA.dt, [&](auto tx, auto tg, auto td) {
    using TX = typename decltype(tx)::type;
    using TG = typename decltype(tg)::type;
    using TD = typename decltype(td)::type;
    lora_da_kernel<TX, TG, TD><<<grid, kThreads, 0, c.stream>>>(mat<const TX>(x), x.rows, x.cols, mat<const TG>(dxa),
                                                                dA.rows, mat<TD>(dA), seed, p, scale);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void lora_dx(const Ctx& c, const DMat& dxa, const DMat& A, const DMat& dx, uint64_t seed, float p, float scale) {
  if (dx.numel() == 0) return;
  with_types(dxa.dt, A.dt, dx.dt, [&](auto tg, auto ta, auto td) {
    using TG = typename decltype(tg)::type;
    using TA = typename decltype(ta)::type;
    using TD = typename decltype(td)::type;
    lora_dx_kernel<TG, TA, TD><<<grid_for(dx.numel(), kThreads), kThreads, 0, c.stream>>>(
        mat<const TG>(dxa), mat<const TA>(A), A.rows, dx.rows, dx.cols, mat<TD>(dx), seed, p, scale);
  });
  XV_CUDA_CHECK_LAUNCH();
}

}  // namespace xv::cuda
