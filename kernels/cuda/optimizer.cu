// The loss and optimizer kernels and their launches: mse_loss (f64 partial sums per block of 4096 elements,
// returned to the host and summed there in block order), the AdamW update (kernels/cpu/rows_cpu.cpp's
// arithmetic, each operation rounded as the cpu's unfused f32 code) and the per-chunk f64 sums of squares.
#include <cmath>

#include "kernels/cuda/cuda_traits.cuh"

namespace xv::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMseBlock = 4096;       // elements per partial sum (the cpu's)
constexpr int64_t kSerialChunk = 2048;    // chunks up to this size: one thread sums one chunk in order

// Block blk: part[blk] = sum over its 4096 elements of (s - t)^2 in f64; ds += gscale (s - t).
template <class TI, class TD>
__global__ void mse_kernel(const TI* s, const TI* t, bool has_ds, TD* ds, int64_t n, float gscale, double* part) {
  const int64_t i0 = blockIdx.x * kMseBlock, i1 = min(n, i0 + kMseBlock);
  double acc = 0.0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += kThreads) {
    const float sv = ld(s + i), tv = ld(t + i);
    const double d = double(sv) - double(tv);
    acc += d * d;
    if (has_ds) st(ds + i, __fadd_rn(ld(ds + i), __fmul_rn(gscale, __fsub_rn(sv, tv))));
  }
  acc = block_reduce<kThreads>(acc, SumOp{});
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// torch.optim.AdamW's single-tensor step in f32, operation by operation as the cpu computes it.
template <class TG>
__global__ void adamw_kernel(float* p, const TG* g, float* m, float* v, int64_t n, AdamWStep c) {
  const float one_b1 = 1.0f - c.b1, one_b2 = 1.0f - c.b2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = ld(g + i);
    float pi = __fmul_rn(p[i], c.decay);
    const float mi = __fadd_rn(m[i], __fmul_rn(__fsub_rn(gi, m[i]), one_b1));  // exp_avg.lerp_(grad, 1 - beta1)
    const float vi = __fadd_rn(__fmul_rn(v[i], c.b2), __fmul_rn(__fmul_rn(one_b2, gi), gi));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), c.bc2_sqrt), c.eps);
    pi = __fadd_rn(pi, __fmul_rn(-c.step_size, __fdiv_rn(mi, denom)));
    p[i] = pi, m[i] = mi, v[i] = vi;
  }
}

// Multi-tensor AdamW: block b updates elements [off, off + kMultiChunk) of segment seg (the host's block
// table), g multiplied by clip first; the per-element arithmetic is adamw_kernel's.
constexpr int64_t kMultiChunk = 8192;
__global__ void adamw_multi_kernel(const AdamWSeg* segs, const int2* blocks, float clip, AdamWStep c) {
  const int2 bt = blocks[blockIdx.x];
  const AdamWSeg sg = segs[bt.x];
  const int64_t i0 = int64_t(bt.y) * kMultiChunk, i1 = min(sg.n, i0 + kMultiChunk);
  const float one_b1 = 1.0f - c.b1, one_b2 = 1.0f - c.b2;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const float gi = clip == 1.0f ? sg.g[i] : __fmul_rn(sg.g[i], clip);
    float pi = __fmul_rn(sg.p[i], c.decay);
    const float mi = __fadd_rn(sg.m[i], __fmul_rn(__fsub_rn(gi, sg.m[i]), one_b1));
    const float vi = __fadd_rn(__fmul_rn(sg.v[i], c.b2), __fmul_rn(__fmul_rn(one_b2, gi), gi));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), c.bc2_sqrt), c.eps);
    pi = __fadd_rn(pi, __fmul_rn(-c.step_size, __fdiv_rn(mi, denom)));
    sg.p[i] = pi, sg.m[i] = mi, sg.v[i] = vi;
  }
}

// Small chunks: thread q sums chunk q in element order (the cpu's order, so its bits).
template <class T>
__global__ void sum_squares_serial_kernel(const T* x, int64_t n, int64_t chunk, int64_t nchunk, double* out) {
  const int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (q >= nchunk) return;
  const int64_t i0 = q * chunk, i1 = min(n, i0 + chunk);
  double acc = 0.0;
  for (int64_t i = i0; i < i1; ++i) {
    const double v = ld(x + i);
    acc += v * v;
  }
  out[q] = acc;
}

// Large chunks: block q reduces chunk q (a fixed tree: deterministic, f64).
template <class T>
__global__ void sum_squares_block_kernel(const T* x, int64_t n, int64_t chunk, double* out) {
  const int64_t i0 = blockIdx.x * chunk, i1 = min(n, i0 + chunk);
  double acc = 0.0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += kThreads) {
    const double v = ld(x + i);
    acc += v * v;
  }
  acc = block_reduce<kThreads>(acc, SumOp{});
  if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

}  // namespace

void mse_loss(const Ctx& c, const DMat& s, const DMat& t, const DMat& ds, float gscale, std::vector<double>& part) {
  const int64_t n = s.numel();
  const int64_t nblk = ceil_div(n, kMseBlock);
  part.assign(size_t(nblk), 0.0);
  if (n == 0) return;
  if (nblk > INT32_MAX) throw_error("cuda backend: mse_loss: too many elements");
  Scratch scratch(c);
  double* dpart = scratch.alloc<double>(nblk);
  with_types(s.dt, dt_or_f32(ds), [&](auto ti, auto td) {
    using TI = typename decltype(ti)::type;
    using TD = typename decltype(td)::type;
    mse_kernel<TI, TD><<<unsigned(nblk), kThreads, 0, c.stream>>>(static_cast<const TI*>(s.p),
                                                                  static_cast<const TI*>(t.p), ds.present,
                                                                  static_cast<TD*>(ds.p), n, gscale, dpart);
  });
  XV_CUDA_CHECK_LAUNCH();
  XV_CUDA_CHECK(cudaMemcpyAsync(part.data(), dpart, size_t(nblk) * sizeof(double), cudaMemcpyDeviceToHost, c.stream));
  XV_CUDA_CHECK(cudaStreamSynchronize(c.stream));
}

void adamw_update(const Ctx& c, const DMat& p, const DMat& g, const DMat& m, const DMat& v, const AdamWStep& s) {
  const int64_t n = p.numel();
  if (n == 0) return;
  with_type(g.dt, [&](auto tg) {
    using TG = typename decltype(tg)::type;
    adamw_kernel<TG><<<grid_for(n, kThreads), kThreads, 0, c.stream>>>(
        static_cast<float*>(p.p), static_cast<const TG*>(g.p), static_cast<float*>(m.p), static_cast<float*>(v.p), n,
        s);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void adamw_update_multi(const Ctx& c, const std::vector<AdamWSeg>& segs, float clip, const AdamWStep& s) {
  std::vector<int2> blocks;
  for (size_t i = 0; i < segs.size(); ++i) {
    const int64_t nb = ceil_div(segs[i].n, kMultiChunk);
    if (nb > INT32_MAX) throw_error("cuda backend: adamw_update_multi: a segment too large");
    for (int64_t b = 0; b < nb; ++b) blocks.push_back(make_int2(int(i), int(b)));
  }
  if (blocks.empty()) return;
  Scratch scratch(c);
  AdamWSeg* dsegs = scratch.alloc<AdamWSeg>(int64_t(segs.size()));
  int2* dblocks = scratch.alloc<int2>(int64_t(blocks.size()));
  XV_CUDA_CHECK(cudaMemcpyAsync(dsegs, segs.data(), segs.size() * sizeof(AdamWSeg), cudaMemcpyHostToDevice, c.stream));
  XV_CUDA_CHECK(
      cudaMemcpyAsync(dblocks, blocks.data(), blocks.size() * sizeof(int2), cudaMemcpyHostToDevice, c.stream));
  if (blocks.size() > size_t(INT32_MAX)) throw_error("cuda backend: adamw_update_multi: too many elements");
  // From pageable host memory: cudaMemcpyAsync has taken the tables when it returns, so they may go.
  adamw_multi_kernel<<<unsigned(blocks.size()), kThreads, 0, c.stream>>>(dsegs, dblocks, clip, s);
  XV_CUDA_CHECK_LAUNCH();
}

std::vector<double> sum_squares_chunks(const Ctx& c, const DMat& x, int64_t chunk) {
  const int64_t n = x.numel();
  const int64_t nchunk = ceil_div(n, chunk);
  std::vector<double> out(size_t(nchunk), 0.0);
  if (n == 0) return out;
  Scratch scratch(c);
  double* dout = scratch.alloc<double>(nchunk);
  with_type(x.dt, [&](auto tx) {
    using T = typename decltype(tx)::type;
    const T* xp = static_cast<const T*>(x.p);
    if (chunk <= kSerialChunk) {
      sum_squares_serial_kernel<T><<<unsigned(ceil_div(nchunk, kThreads)), kThreads, 0, c.stream>>>(xp, n, chunk,
                                                                                                 nchunk, dout);
    } else {
      if (nchunk > INT32_MAX) throw_error("cuda backend: sum_squares_chunks: too many chunks");
      sum_squares_block_kernel<T><<<unsigned(nchunk), kThreads, 0, c.stream>>>(xp, n, chunk, dout);
    }
  });
  XV_CUDA_CHECK_LAUNCH();
  XV_CUDA_CHECK(cudaMemcpyAsync(out.data(), dout, size_t(nchunk) * sizeof(double), cudaMemcpyDeviceToHost, c.stream));
  XV_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  return out;
}

}  // namespace xv::cuda
