// Row-moving kernels and their launches: gather_rows, copy_rows, im2col_patches (pure data movement, bit-exact
// with the cpu: same-dtype elements are copied as bits, a cast rounds as core/dtype.h), rope and its transpose,
// and the masked mean pooling with its adjoint. One thread per element; the pooling sums run over positions in
// order, one thread per (batch, column), as kernels/cpu/rows_cpu.cpp.
//
// Indices are not range-checked (they live on the device; the cpu does not check them either): an index past
// its table is a caller's bug and reads or writes out of bounds.
#include <cmath>

#include "kernels/cuda/cuda_traits.cuh"

namespace xv::cuda {

namespace {

constexpr int kThreads = 256;

// ---- Kernels -------------------------------------------------------------------------------------------

// out row i = a row idx[i] (idx[i] >= 0) or b row -1 - idx[i].
template <class TA, class TO>
__global__ void gather_rows_kernel(Mat<const TA> a, Mat<const TA> b, const int32_t* idx, Mat<TO> out, int64_t n,
                                   int64_t C) {
  const int64_t total = n * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / C, c = e - i * C;
    const int64_t k = idx[i];
    const TA* from = k >= 0 ? a.row(k) : b.row(-1 - k);
    out.row(i)[c] = cast_elem<TO>(from[c]);
  }
}

// dst row idx[i] = src row i; negative idx[i] skips the row.
template <class TS, class TD>
__global__ void copy_rows_kernel(Mat<const TS> src, const int32_t* idx, Mat<TD> dst, int64_t n, int64_t C) {
  const int64_t total = n * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / C, c = e - i * C;
    const int64_t k = idx[i];
    if (k >= 0) dst.row(k)[c] = cast_elem<TD>(src.row(i)[c]);
  }
}

// cols (N * G * G, CH * P * P), G = S / P: element (patch, (ch, ky, kx)) = pixel (n, ch, gy P + ky, gx P + kx).
template <class TP, class TC>
__global__ void im2col_kernel(const TP* pixels, TC* cols, int64_t N, int64_t CH, int64_t S, int64_t P) {
  const int64_t G = S / P, NP = G * G, K = CH * P * P;
  const int64_t total = N * NP * K;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / K, k = e - row * K;
    const int64_t n = row / NP, g = row - n * NP;
    const int64_t gy = g / G, gx = g - gy * G;
    const int64_t ch = k / (P * P), rem = k - ch * P * P;
    const int64_t ky = rem / P, kx = rem - ky * P;
    cols[e] = cast_elem<TC>(pixels[((n * CH + ch) * S + gy * P + ky) * S + gx * P + kx]);
  }
}

// One thread per (row, head, i < half): the pair (i, i + half) of one head's rotated dims.
//   forward:  (x1, x2) -> (x1 c1 - x2 s1, x2 c2 + x1 s2)
//   backward: (d1, d2) -> (d1 c1 + d2 s2, d2 c2 - d1 s1)  (the transpose)
// with c1, s1 at column i and c2, s2 at i + half of the row's position t.
template <class TX, class TC>
__global__ void rope_kernel(Mat<TX> x, Mat<const TC> cos, Mat<const TC> sin, int64_t rows, int64_t T, int64_t H,
                            int64_t D, int64_t half, bool backward) {
  const int64_t total = rows * H * half;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / (H * half), rem = e - r * H * half;
    const int64_t h = rem / half, i = rem - h * half;
    const int64_t t = r % T;
    TX* v = x.row(r) + h * D;
    const float c1 = ld(cos.row(t) + i), c2 = ld(cos.row(t) + i + half);
    const float s1 = ld(sin.row(t) + i), s2 = ld(sin.row(t) + i + half);
    const float a = ld(v + i), b = ld(v + i + half);
    if (backward) {
      st(v + i, __fadd_rn(__fmul_rn(a, c1), __fmul_rn(b, s2)));
      st(v + i + half, __fsub_rn(__fmul_rn(b, c2), __fmul_rn(a, s1)));
    } else {
      st(v + i, __fsub_rn(__fmul_rn(a, c1), __fmul_rn(b, s1)));
      st(v + i + half, __fadd_rn(__fmul_rn(b, c2), __fmul_rn(a, s2)));
    }
  }
}

// out (B, C): thread (b, c) walks positions t in order (the cpu's order): o += x m where m != 0, then o / max(n,
// 1e-9) with n the sum of the mask.
template <class TX, class TO>
__global__ void masked_mean_kernel(Mat<const TX> x, Vec<const float> mask, Mat<TO> out, int64_t B, int64_t T,
                                   int64_t C) {
  const int64_t total = B * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / C, c = e - b * C;
    float o = 0.0f, n = 0.0f;
    for (int64_t t = 0; t < T; ++t) {
      const float m = *mask.at(b * T + t);
      if (m == 0.0f) continue;
      n = __fadd_rn(n, m);
      o = __fadd_rn(o, __fmul_rn(ld(x.row(b * T + t) + c), m));
    }
    const float inv = __fdiv_rn(1.0f, n < 1e-9f ? 1e-9f : n);
    st(out.row(b) + c, __fmul_rn(o, inv));
  }
}

// inv[b] = 1 / max(sum_t mask[b, t], 1e-9), the sum in position order.
__global__ void mask_inverse_counts_kernel(Vec<const float> mask, float* inv, int64_t B, int64_t T) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  float n = 0.0f;
  for (int64_t t = 0; t < T; ++t) n = __fadd_rn(n, *mask.at(b * T + t));
  inv[b] = __fdiv_rn(1.0f, n < 1e-9f ? 1e-9f : n);
}

// dx row (b, t) = dout row b * mask[b, t] * inv[b]; exactly zero where that weight is 0.
template <class TD, class TX>
__global__ void masked_mean_backward_kernel(Mat<const TD> dout, Vec<const float> mask, const float* inv, Mat<TX> dx,
                                            int64_t B, int64_t T, int64_t C) {
  const int64_t total = B * T * C;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / C, c = e - r * C;
    const int64_t b = r / T;
    const float m = __fmul_rn(*mask.at(r), inv[b]);
    st(dx.row(r) + c, m == 0.0f ? 0.0f : __fmul_rn(ld(dout.row(b) + c), m));
  }
}

}  // namespace

// ---- Launches ----------------------------------------------------------------------------------------------

void gather_rows(const Ctx& c, const DMat& a, const DMat& b, const DMat& idx, const DMat& out) {
  const int64_t n = out.rows, C = out.cols;
  if (n * C == 0) return;
  with_types(a.dt, out.dt, [&](auto ta, auto to) {
    using TA = typename decltype(ta)::type;
    using TO = typename decltype(to)::type;
    gather_rows_kernel<TA, TO><<<grid_for(n * C, kThreads), kThreads, 0, c.stream>>>(
        mat<const TA>(a), b.present ? mat<const TA>(b) : Mat<const TA>{}, static_cast<const int32_t*>(idx.p),
        mat<TO>(out), n, C);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void copy_rows(const Ctx& c, const DMat& src, const DMat& idx, const DMat& dst) {
  const int64_t n = src.rows, C = src.cols;
  if (n * C == 0) return;
  with_types(src.dt, dst.dt, [&](auto ts, auto td) {
    using TS = typename decltype(ts)::type;
    using TD = typename decltype(td)::type;
    copy_rows_kernel<TS, TD><<<grid_for(n * C, kThreads), kThreads, 0, c.stream>>>(
        mat<const TS>(src), static_cast<const int32_t*>(idx.p), mat<TD>(dst), n, C);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void im2col_patches(const Ctx& c, const DMat& pixels, int64_t N, int64_t CH, int64_t S, int64_t P,
                    const DMat& cols) {
  if (cols.numel() == 0) return;
  with_types(pixels.dt, cols.dt, [&](auto tp, auto tc) {
    using TP = typename decltype(tp)::type;
    using TC = typename decltype(tc)::type;
    im2col_kernel<TP, TC><<<grid_for(cols.numel(), kThreads), kThreads, 0, c.stream>>>(
        static_cast<const TP*>(pixels.p), static_cast<TC*>(cols.p), N, CH, S, P);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void rope(const Ctx& c, const DMat& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim,
          const DMat& cos, const DMat& sin, bool backward) {
  const int64_t rows = B * T, half = rot_dim / 2;
  const int64_t total = rows * H * half;
  if (total == 0) return;
  with_types(x.dt, cos.dt, [&](auto tx, auto tc) {
    using TX = typename decltype(tx)::type;
    using TC = typename decltype(tc)::type;
    rope_kernel<TX, TC><<<grid_for(total, kThreads), kThreads, 0, c.stream>>>(
        mat<TX>(x), mat<const TC>(cos), mat<const TC>(sin), rows, T, H, D, half, backward);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void masked_mean_rows(const Ctx& c, const DMat& x, const DMat& mask, int64_t B, int64_t T, const DMat& out) {
  const int64_t C = x.cols;
  if (B * C == 0) return;
  with_types(x.dt, out.dt, [&](auto tx, auto to) {
    using TX = typename decltype(tx)::type;
    using TO = typename decltype(to)::type;
    masked_mean_kernel<TX, TO><<<grid_for(B * C, kThreads), kThreads, 0, c.stream>>>(
        mat<const TX>(x), vec<const float>(mask), mat<TO>(out), B, T, C);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void masked_mean_rows_backward(const Ctx& c, const DMat& dout, const DMat& mask, int64_t B, int64_t T,
                               const DMat& dx) {
  const int64_t C = dout.cols;
  if (B * T * C == 0) return;
  Scratch scratch(c);
  float* inv = scratch.alloc<float>(B);
  mask_inverse_counts_kernel<<<unsigned(ceil_div(B, kThreads)), kThreads, 0, c.stream>>>(vec<const float>(mask), inv,
                                                                                        B, T);
  XV_CUDA_CHECK_LAUNCH();
  with_types(dout.dt, dx.dt, [&](auto td, auto tx) {
    using TD = typename decltype(td)::type;
    using TX = typename decltype(tx)::type;
    masked_mean_backward_kernel<TD, TX><<<grid_for(B * T * C, kThreads), kThreads, 0, c.stream>>>(
        mat<const TD>(dout), vec<const float>(mask), inv, mat<TX>(dx), B, T, C);
  });
  XV_CUDA_CHECK_LAUNCH();
}

}  // namespace xv::cuda
