// The self-KD loss fused (kernels/ops.h: distill_loss): both MSE terms, their gradients and the per-term values
// in one pass over s_en, s_xx and t. The per-thread arithmetic is kernels/cuda/tiles/loss_tiles.h; the block
// partials (f64) are reduced by a fixed tree and summed on the host in block order, as the CPU sums its blocks.
#include "kernels/cuda/cuda_traits.cuh"
#include "kernels/cuda/tiles/loss_tiles.h"

namespace xv::cuda {

namespace {

constexpr int kThreads = loss_tiles::kThreads;

template <class TI, class TD>
__global__ void __launch_bounds__(kThreads) distill_loss_kernel(const TI* se, const TI* sx, const TI* t, int64_t n,
                                                                float gscale, TD* dse, TD* dsx, double* part) {
  auto load = [&](int64_t i, float* a, float* b, float* c) { *a = ld(se + i), *b = ld(sx + i), *c = ld(t + i); };
  auto grad = [&](int64_t i, float ge, float gx) {
    if (dse) st(dse + i, __fadd_rn(ld(dse + i), ge));
    if (dsx) st(dsx + i, __fadd_rn(ld(dsx + i), gx));
  };
  double en = 0.0, xx = 0.0;
  loss_tiles::thread_partials(load, n, blockIdx.x, threadIdx.x, gscale, &en, &xx, grad);
  en = block_reduce<kThreads>(en, SumOp{});
  xx = block_reduce<kThreads>(xx, SumOp{});
  if (threadIdx.x == 0) part[2 * blockIdx.x] = en, part[2 * blockIdx.x + 1] = xx;
}

}  // namespace

void distill_loss(const Ctx& c, const DMat& s_en, const DMat& s_xx, const DMat& t, const DMat& ds_en,
                  const DMat& ds_xx, float gscale, std::vector<double>& part) {
  const int64_t n = t.numel();
  const int64_t nblk = loss_tiles::blocks(n);
  part.assign(size_t(2 * nblk), 0.0);
  if (n == 0) return;
  if (nblk > INT32_MAX) throw_error("cuda backend: distill_loss: too many elements");
  Scratch scratch(c);
  double* dpart = scratch.alloc<double>(2 * nblk);
  const DType dd = ds_en.present ? ds_en.dt : dt_or_f32(ds_xx);
  with_types(t.dt, dd, [&](auto ti, auto td) {
    using TI = typename decltype(ti)::type;
    using TD = typename decltype(td)::type;
    distill_loss_kernel<TI, TD><<<unsigned(nblk), kThreads, 0, c.stream>>>(
        static_cast<const TI*>(s_en.p), static_cast<const TI*>(s_xx.p), static_cast<const TI*>(t.p), n, gscale,
        ds_en.present ? static_cast<TD*>(ds_en.p) : nullptr, ds_xx.present ? static_cast<TD*>(ds_xx.p) : nullptr,
        dpart);
  });
  XV_CUDA_CHECK_LAUNCH();
  XV_CUDA_CHECK(cudaMemcpyAsync(part.data(), dpart, size_t(2 * nblk) * sizeof(double), cudaMemcpyDeviceToHost,
                                c.stream));
  XV_CUDA_CHECK(cudaStreamSynchronize(c.stream));
}

}  // namespace xv::cuda
