// Row reductions and their launches: layernorm, rmsnorm, their backward, l2_normalize, and the fixed-order
// column sums behind every parameter gradient that sums over rows (dg, db of the norms; db of linear).
//
// The forward and the per-row part of the backward run one block per row (C is at most a few thousand), the
// row statistics reduced by the deterministic block_reduce. Parameter gradients never use atomics: rows are
// cut into blocks of 64 (kernels/cpu/ops_backward_cpu.cpp's kRowBlock), one thread per (block, column) sums
// its block's rows in order into a partial, and one thread per column adds the partials in block order, as
// the cpu does (so given the same row statistics the sums are the cpu's, bit for bit).
#include <cmath>

#include "kernels/cuda/cuda_traits.cuh"

namespace xv::cuda {

namespace {

constexpr int kRowThreads = 256;  // threads per row block
constexpr int kColThreads = 256;  // columns per block of the column-sum kernels
constexpr int64_t kRowBlock = 64;  // rows per partial sum (the cpu's)
constexpr int64_t kMaxGridY = 65535;

// ---- Kernels -------------------------------------------------------------------------------------------

template <class TX, class TP, class TY>
__global__ void layernorm_kernel(Mat<const TX> x, Vec<const TP> g, Vec<const TP> b, bool has_b, Mat<TY> y,
                                 int64_t rows, int64_t C, float eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const TX* xr = x.row(r);
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) s += ld(xr + c);
    const float mean = block_reduce<kRowThreads>(s, SumOp{}) / float(C);
    float v = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) {
      const float d = ld(xr + c) - mean;
      v += d * d;
    }
    const float rstd = 1.0f / sqrtf(block_reduce<kRowThreads>(v, SumOp{}) / float(C) + eps);
    TY* yr = y.row(r);
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) {
      float o = (ld(xr + c) - mean) * rstd * ld(g.at(c));
      if (has_b) o += ld(b.at(c));
      st(yr + c, o);
    }
  }
}

template <class TX, class TP, class TY>
__global__ void rmsnorm_kernel(Mat<const TX> x, Vec<const TP> g, Mat<TY> y, int64_t rows, int64_t C, float eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const TX* xr = x.row(r);
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) {
      const float v = ld(xr + c);
      ss += v * v;
    }
    const float rstd = 1.0f / sqrtf(block_reduce<kRowThreads>(ss, SumOp{}) / float(C) + eps);
    TY* yr = y.row(r);
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) st(yr + c, ld(g.at(c)) * (ld(xr + c) * rstd));
  }
}

// Per row: mean (layernorm; 0 for rmsnorm) and rstd into stats, and dx when wanted:
//   layernorm: dx = rstd (dy g - mean(dy g) - xhat mean(dy g xhat)),  xhat = (x - mean) rstd
//   rmsnorm:   dx = rstd (dy g - xhat mean(dy g xhat)),               xhat = x rstd
template <class TI, class TG, class TD>
__global__ void norm_backward_rows_kernel(bool rms, Mat<const TI> x, Vec<const TG> g, Mat<const TI> dy, bool has_dx,
                                          Mat<TD> dx, float* mean_out, float* rstd_out, int64_t rows, int64_t C,
                                          float eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const TI* xr = x.row(r);
    const TI* dyr = dy.row(r);
    float mean = 0.0f, rstd;
    if (rms) {
      float ss = 0.0f;
      for (int64_t c = threadIdx.x; c < C; c += kRowThreads) {
        const float v = ld(xr + c);
        ss += v * v;
      }
      rstd = 1.0f / sqrtf(block_reduce<kRowThreads>(ss, SumOp{}) / float(C) + eps);
    } else {
      float s = 0.0f;
      for (int64_t c = threadIdx.x; c < C; c += kRowThreads) s += ld(xr + c);
      mean = block_reduce<kRowThreads>(s, SumOp{}) / float(C);
      float v = 0.0f;
      for (int64_t c = threadIdx.x; c < C; c += kRowThreads) {
        const float d = ld(xr + c) - mean;
        v += d * d;
      }
      rstd = 1.0f / sqrtf(block_reduce<kRowThreads>(v, SumOp{}) / float(C) + eps);
    }
    if (threadIdx.x == 0) mean_out[r] = mean, rstd_out[r] = rstd;
    if (!has_dx) continue;
    float sa = 0.0f, sb = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) {
      const float dxh = ld(dyr + c) * ld(g.at(c));
      sa += dxh;
      sb += dxh * ((ld(xr + c) - mean) * rstd);
    }
    const float mb = block_reduce<kRowThreads>(sb, SumOp{}) / float(C);
    const float ma = rms ? 0.0f : block_reduce<kRowThreads>(sa, SumOp{}) / float(C);
    TD* dxr = dx.row(r);
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) {
      const float xc = ld(xr + c) - mean;
      const float dxh = ld(dyr + c) * ld(g.at(c));
      st(dxr + c, rms ? rstd * (dxh - xc * rstd * mb) : rstd * (dxh - ma - xc * rstd * mb));
    }
  }
}

// pg[blk][c] = sum over the block's rows of dy xhat, pb[blk][c] = sum of dy (pb null: skipped), in row order.
template <class TI>
__global__ void norm_param_partials_kernel(Mat<const TI> x, Mat<const TI> dy, const float* mean, const float* rstd,
                                           float* pg, float* pb, int64_t rows, int64_t C, int64_t nblk) {
  const int64_t c = blockIdx.x * int64_t(kColThreads) + threadIdx.x;
  if (c >= C) return;
  for (int64_t blk = blockIdx.y; blk < nblk; blk += gridDim.y) {
    float ag = 0.0f, ab = 0.0f;
    const int64_t r1 = min(rows, (blk + 1) * kRowBlock);
    for (int64_t r = blk * kRowBlock; r < r1; ++r) {
      const float d = ld(dy.row(r) + c);
      const float xhat = __fmul_rn(__fsub_rn(ld(x.row(r) + c), mean[r]), rstd[r]);
      ag = __fadd_rn(ag, __fmul_rn(d, xhat));
      ab = __fadd_rn(ab, d);
    }
    if (pg) pg[blk * C + c] = ag;
    if (pb) pb[blk * C + c] = ab;
  }
}

// part[blk][c] = sum over the block's rows of m, in row order.
template <class T>
__global__ void row_partials_kernel(Mat<const T> m, float* part, int64_t rows, int64_t C, int64_t nblk) {
  const int64_t c = blockIdx.x * int64_t(kColThreads) + threadIdx.x;
  if (c >= C) return;
  for (int64_t blk = blockIdx.y; blk < nblk; blk += gridDim.y) {
    float a = 0.0f;
    const int64_t r1 = min(rows, (blk + 1) * kRowBlock);
    for (int64_t r = blk * kRowBlock; r < r1; ++r) a = __fadd_rn(a, ld(m.row(r) + c));
    part[blk * C + c] = a;
  }
}

// out[c] += sum over blk of part[blk][c], in block order.
template <class TO>
__global__ void add_partials_kernel(const float* part, int64_t nblk, int64_t C, Vec<TO> out) {
  const int64_t c = blockIdx.x * int64_t(kColThreads) + threadIdx.x;
  if (c >= C) return;
  float acc = 0.0f;
  for (int64_t blk = 0; blk < nblk; ++blk) acc = __fadd_rn(acc, part[blk * C + c]);
  TO* o = out.at(c);
  st(o, __fadd_rn(ld(o), acc));
}

// x / max(||x||, 1e-12), the sum of squares in f64 as the cpu.
template <class T>
__global__ void l2_normalize_kernel(T* x, int64_t rows, int64_t C) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* xr = x + r * C;
    double ss = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) {
      const double v = ld(xr + c);
      ss += v * v;
    }
    ss = block_reduce<kRowThreads>(ss, SumOp{});
    const float inv = float(1.0 / fmax(sqrt(ss), 1e-12));
    for (int64_t c = threadIdx.x; c < C; c += kRowThreads) st(xr + c, ld(xr + c) * inv);
  }
}

unsigned row_grid(int64_t rows) { return unsigned(std::min<int64_t>(rows, int64_t(1) << 20)); }

// out (C elements) += the column sums of part (nblk, C).
void add_partials(const Ctx& c, const float* part, int64_t nblk, int64_t C, const DMat& out) {
  with_type(out.dt, [&](auto to) {
    using TO = typename decltype(to)::type;
    add_partials_kernel<TO><<<unsigned(ceil_div(C, kColThreads)), kColThreads, 0, c.stream>>>(part, nblk, C,
                                                                                               vec<TO>(out));
  });
  XV_CUDA_CHECK_LAUNCH();
}

dim3 partials_grid(int64_t C, int64_t nblk) {
  return dim3(unsigned(ceil_div(C, kColThreads)), unsigned(std::min(nblk, kMaxGridY)));
}

}  // namespace

// ---- Launches ----------------------------------------------------------------------------------------------

void layernorm(const Ctx& c, const DMat& x, const DMat& g, const DMat& b, const DMat& y, float eps) {
  if (x.rows == 0) return;
  with_types(x.dt, g.dt, y.dt, [&](auto tx, auto tp, auto ty) {
    using TX = typename decltype(tx)::type;
    using TP = typename decltype(tp)::type;
    using TY = typename decltype(ty)::type;
    layernorm_kernel<TX, TP, TY><<<row_grid(x.rows), kRowThreads, 0, c.stream>>>(
        mat<const TX>(x), vec<const TP>(g), b.present ? vec<const TP>(b) : Vec<const TP>{}, b.present, mat<TY>(y),
        x.rows, x.cols, eps);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void rmsnorm(const Ctx& c, const DMat& x, const DMat& g, const DMat& y, float eps) {
  if (x.rows == 0) return;
  with_types(x.dt, g.dt, y.dt, [&](auto tx, auto tp, auto ty) {
    using TX = typename decltype(tx)::type;
    using TP = typename decltype(tp)::type;
    using TY = typename decltype(ty)::type;
    rmsnorm_kernel<TX, TP, TY><<<row_grid(x.rows), kRowThreads, 0, c.stream>>>(mat<const TX>(x), vec<const TP>(g),
                                                                               mat<TY>(y), x.rows, x.cols, eps);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void norm_backward(const Ctx& c, bool rms, const DMat& x, const DMat& g, const DMat& dy, const DMat& dx,
                   const DMat& dg, const DMat& db, float eps) {
  const int64_t rows = x.rows, C = x.cols;
  if (rows == 0 || C == 0) return;
  Scratch scratch(c);
  float* mean = scratch.alloc<float>(rows);
  float* rstd = scratch.alloc<float>(rows);
  with_types(x.dt, g.dt, dt_or_f32(dx), [&](auto ti, auto tg, auto td) {
    using TI = typename decltype(ti)::type;
    using TG = typename decltype(tg)::type;
    using TD = typename decltype(td)::type;
    norm_backward_rows_kernel<TI, TG, TD><<<row_grid(rows), kRowThreads, 0, c.stream>>>(
        rms, mat<const TI>(x), vec<const TG>(g), mat<const TI>(dy), dx.present, mat<TD>(dx), mean, rstd, rows, C,
        eps);
  });
  XV_CUDA_CHECK_LAUNCH();
  const bool want_db = db.present && !rms;
  if (!dg.present && !want_db) return;
  const int64_t nblk = ceil_div(rows, kRowBlock);
  float* pg = dg.present ? scratch.alloc<float>(nblk * C) : nullptr;
  float* pb = want_db ? scratch.alloc<float>(nblk * C) : nullptr;
  with_type(x.dt, [&](auto ti) {
    using TI = typename decltype(ti)::type;
    norm_param_partials_kernel<TI><<<partials_grid(C, nblk), kColThreads, 0, c.stream>>>(
        mat<const TI>(x), mat<const TI>(dy), mean, rstd, pg, pb, rows, C, nblk);
  });
  XV_CUDA_CHECK_LAUNCH();
  if (pg) add_partials(c, pg, nblk, C, dg);
  if (pb) add_partials(c, pb, nblk, C, db);
}

void l2_normalize(const Ctx& c, const DMat& x) {
  if (x.rows == 0) return;
  with_type(x.dt, [&](auto t) {
    using T = typename decltype(t)::type;
    l2_normalize_kernel<T><<<row_grid(x.rows), kRowThreads, 0, c.stream>>>(static_cast<T*>(x.p), x.rows, x.cols);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void row_sums_add(const Ctx& c, const DMat& m, const DMat& out) {
  const int64_t rows = m.rows, C = m.cols;
  if (rows == 0 || C == 0) return;
  Scratch scratch(c);
  const int64_t nblk = ceil_div(rows, kRowBlock);
  float* part = scratch.alloc<float>(nblk * C);
  with_type(m.dt, [&](auto t) {
    using T = typename decltype(t)::type;
    row_partials_kernel<T><<<partials_grid(C, nblk), kColThreads, 0, c.stream>>>(mat<const T>(m), part, rows, C,
                                                                                 nblk);
  });
  XV_CUDA_CHECK_LAUNCH();
  add_partials(c, part, nblk, C, out);
}

}  // namespace xv::cuda
