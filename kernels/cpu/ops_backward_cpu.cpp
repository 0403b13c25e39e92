// The CPU reference kernels of kernels/cpu/cpu_kernels.h, backward: f32, OpenMP across rows, OpenBLAS for GEMMs.
// Input gradients are overwritten, parameter gradients accumulated; a null gradient pointer skips it.
//
// Determinism: every reduction over rows (dg, db, embedding scatter, the MSE sum) runs in a fixed order that
// does not depend on the thread count. Rows are cut into fixed blocks of kRowBlock, each block writes its
// own partial (C) vector, and the partials are summed in block order, in parallel across columns.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "kernels/cpu/cpu_kernels.h"

namespace xv::cpu {

namespace {

constexpr int64_t kRowBlock = 64;   // rows per partial-sum block
constexpr int64_t kColChunk = 256;  // columns per task when a task owns a column range

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// out (C) += sum_blk part (nblk, C), in block order.
void add_block_sums(const float* part, int64_t nblk, int64_t C, float* out) {
  const int64_t nchunk = ceil_div(C, kColChunk);
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < nchunk; ++ch) {
    const int64_t c0 = ch * kColChunk, c1 = std::min(C, c0 + kColChunk);
    float acc[kColChunk] = {};
    for (int64_t blk = 0; blk < nblk; ++blk) {
      const float* pb = part + blk * C + c0;
#pragma omp simd
      for (int64_t c = 0; c < c1 - c0; ++c) acc[c] += pb[c];
    }
#pragma omp simd
    for (int64_t c = 0; c < c1 - c0; ++c) out[c0 + c] += acc[c];
  }
}

}  // namespace

void linear_backward(const float* x, int64_t ldx, const float* W, const float* dy, int64_t ldy, float* dx,
                     int64_t lddx, float* dW, float* db, int64_t M, int64_t K, int64_t N) {
  if (M == 0) return;
  if (dx) {
    if (N == 0) {
      for (int64_t r = 0; r < M; ++r) std::fill(dx + r * lddx, dx + r * lddx + K, 0.0f);
    } else {
      gemm(false, false, M, K, N, 1.0f, dy, ldy, W, K, 0.0f, dx, lddx);  // (M, N) @ (N, K)
    }
  }
  if (dW && K > 0) gemm(true, false, N, K, M, 1.0f, dy, ldy, x, ldx, 1.0f, dW, K);  // (N, M) @ (M, K)
  if (db && N > 0) {
    const int64_t nblk = ceil_div(M, kRowBlock);
    std::vector<float> part(static_cast<size_t>(nblk * N));
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblk; ++blk) {
      float* pb = part.data() + blk * N;
      std::fill(pb, pb + N, 0.0f);
      for (int64_t r = blk * kRowBlock; r < std::min(M, (blk + 1) * kRowBlock); ++r) {
        const float* d = dy + r * ldy;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) pb[n] += d[n];
      }
    }
    add_block_sums(part.data(), nblk, N, db);
  }
}

// With xhat = (x - mean) rstd and dxhat = dy g:
//   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),  dg += sum_rows dy xhat,  db += sum_rows dy.
void layernorm_backward(const float* x, const float* g, const float* dy, float* dx, float* dg, float* db,
                        int64_t rows, int64_t C, float eps) {
  if (rows == 0 || C == 0) return;
  const int64_t nblk = ceil_div(rows, kRowBlock);
  std::vector<float> pg(dg ? static_cast<size_t>(nblk * C) : 0), pbias(db ? static_cast<size_t>(nblk * C) : 0);
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblk; ++blk) {
    float* pgb = dg ? pg.data() + blk * C : nullptr;
    float* pbb = db ? pbias.data() + blk * C : nullptr;
    if (pgb) std::fill(pgb, pgb + C, 0.0f);
    if (pbb) std::fill(pbb, pbb + C, 0.0f);
    for (int64_t r = blk * kRowBlock; r < std::min(rows, (blk + 1) * kRowBlock); ++r) {
      const float* xr = x + r * C;
      const float* dyr = dy + r * C;
      // mean and rstd exactly as the forward computes them
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < C; ++c) sum += xr[c];
      const float mean = sum / float(C);
      float var = 0.0f;
#pragma omp simd reduction(+ : var)
      for (int64_t c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
      const float rstd = 1.0f / std::sqrt(var / float(C) + eps);
      if (pgb) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) pgb[c] += dyr[c] * ((xr[c] - mean) * rstd);
      }
      if (pbb) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) pbb[c] += dyr[c];
      }
      if (dx) {
        float sa = 0.0f, sb = 0.0f;
#pragma omp simd reduction(+ : sa, sb)
        for (int64_t c = 0; c < C; ++c) {
          const float dxh = dyr[c] * g[c];
          sa += dxh;
          sb += dxh * ((xr[c] - mean) * rstd);
        }
        const float ma = sa / float(C), mb = sb / float(C);
        float* dxr = dx + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dxr[c] = rstd * (dyr[c] * g[c] - ma - (xr[c] - mean) * rstd * mb);
      }
    }
  }
  if (dg) add_block_sums(pg.data(), nblk, C, dg);
  if (db) add_block_sums(pbias.data(), nblk, C, db);
}

// With xhat = x rstd and dxhat = dy g: dx = rstd (dxhat - xhat mean(dxhat xhat)), dg += sum_rows dy xhat.
void rmsnorm_backward(const float* x, const float* g, const float* dy, float* dx, float* dg,
                      int64_t rows, int64_t C, float eps) {
  if (rows == 0 || C == 0) return;
  const int64_t nblk = ceil_div(rows, kRowBlock);
  std::vector<float> pg(dg ? static_cast<size_t>(nblk * C) : 0);
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblk; ++blk) {
    float* pgb = dg ? pg.data() + blk * C : nullptr;
    if (pgb) std::fill(pgb, pgb + C, 0.0f);
    for (int64_t r = blk * kRowBlock; r < std::min(rows, (blk + 1) * kRowBlock); ++r) {
      const float* xr = x + r * C;
      const float* dyr = dy + r * C;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
      const float rstd = 1.0f / std::sqrt(ss / float(C) + eps);
      if (pgb) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) pgb[c] += dyr[c] * (xr[c] * rstd);
      }
      if (dx) {
        float sb = 0.0f;
#pragma omp simd reduction(+ : sb)
        for (int64_t c = 0; c < C; ++c) sb += dyr[c] * g[c] * (xr[c] * rstd);
        const float mb = sb / float(C);
        float* dxr = dx + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dxr[c] = rstd * (dyr[c] * g[c] - xr[c] * rstd * mb);
      }
    }
  }
  if (dg) add_block_sums(pg.data(), nblk, C, dg);
}

// f = x Phi(x): f' = Phi(x) + x phi(x).
void gelu_erf_backward(const float* x, const float* dy, float* dx, int64_t n) {
  const float inv_sqrt2 = float(1.0 / std::numbers::sqrt2);
  const float inv_sqrt_2pi = float(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float cdf = 0.5f * (1.0f + vec::erf(v * inv_sqrt2));
    const float pdf = inv_sqrt_2pi * vec::exp(-0.5f * v * v);
    dx[i] = dy[i] * (cdf + v * pdf);
  }
}

// f = 0.5 x (1 + tanh u), u = k (x + a x^3): f' = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2).
// tanh u = 1 - 2 / (1 + e^{2u}) through vec::exp so the loop vectorises (absolute error ~1e-7 near 0, and
// exactly +-1 once e^{2u} over/underflows).
void gelu_tanh_backward(const float* x, const float* dy, float* dx, int64_t n) {
  const float k = float(std::sqrt(2.0 / std::numbers::pi)), a = 0.044715f;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = k * (v + a * v * v * v);
    const float t = 1.0f - 2.0f / (1.0f + vec::exp(2.0f * u));
    dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * k * (1.0f + 3.0f * a * v * v));
  }
}

// f = x s(1.702 x): f' = s + 1.702 x s (1 - s).
void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float s = 1.0f / (1.0f + vec::exp(-1.702f * v));
    dx[i] = dy[i] * (s + 1.702f * v * s * (1.0f - s));
  }
}

// f = x s(x): f' = s (1 + x (1 - s)).
void silu_backward(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float s = 1.0f / (1.0f + vec::exp(-v));
    dx[i] = dy[i] * (s * (1.0f + v * (1.0f - s)));
  }
}

// out = silu(g) u: dg = dout u silu'(g), du = dout silu(g). Each element reads its inputs before writing.
void swiglu_backward(const float* gate_up, const float* dout, float* dgate_up, int64_t rows, int64_t I) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * I;
    const float* u = g + I;
    const float* d = dout + r * I;
    float* dg = dgate_up + r * 2 * I;
    float* du = dg + I;
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) {
      const float gv = g[i], uv = u[i], dv = d[i];
      const float s = 1.0f / (1.0f + vec::exp(-gv));
      dg[i] = dv * uv * (s * (1.0f + gv * (1.0f - s)));
      du[i] = dv * (gv * s);
    }
  }
}

// The forward maps (x1, x2) -> (x1 c1 - x2 s1, x2 c2 + x1 s2) with c1, s1 at i and c2, s2 at i + half; its
// transpose maps (d1, d2) -> (d1 c1 + d2 s2, d2 c2 - d1 s1).
void rope_backward(float* dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, int64_t row_stride,
                   const float* cos, const float* sin) {
  const int64_t half = rot_dim / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const float* c = cos + t * rot_dim;
      const float* s = sin + t * rot_dim;
      for (int64_t h = 0; h < H; ++h) {
        float* v = dx + (b * T + t) * row_stride + h * D;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float d1 = v[i], d2 = v[i + half];
          v[i] = d1 * c[i] + d2 * s[i + half];
          v[i + half] = d2 * c[i + half] - d1 * s[i];
        }
      }
    }
}

namespace {

// P (rows, kend) = softmax(S) in place, row r of the block starting at query i0; exactly the forward's
// arithmetic (so P matches what the forward used). Masked keys, keys above the diagonal when causal, and
// whole rows whose keys are all masked come out as zeros.
void softmax_block(float* S, int64_t rows, int64_t kend, int64_t i0, bool causal, const float* mask) {
  for (int64_t r = 0; r < rows; ++r) {
    float* s = S + r * kend;
    const int64_t jend = causal ? i0 + r + 1 : kend;
    float mx = -INFINITY;
    for (int64_t j = 0; j < jend; ++j) {
      if (mask && mask[j] == 0.0f) s[j] = -INFINITY;
      mx = std::max(mx, s[j]);
    }
    if (mx == -INFINITY) {
      std::fill(s, s + kend, 0.0f);
      continue;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < jend; ++j) {
      const float e = vec::exp(s[j] - mx);
      s[j] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < jend; ++j) s[j] *= inv;
    std::fill(s + jend, s + kend, 0.0f);
  }
}

}  // namespace

// Per (batch, kv head): zero its dk, dv rows, then for each query head of the group and each block of
// kRows queries (kend keys: up to the block's last query when causal):
//   P (rows, kend) = softmax(scale Q K^T)        recomputed
//   dV (kend, D)  += P^T dO
//   dP (rows, kend) = dO V^T,  dS = P * (dP - rowsum(P * dP))
//   dQ (rows, D)   = scale dS K,  dK (kend, D) += scale dS^T Q
// A (batch, kv head) task owns its dk, dv rows and the dq rows of its query heads, so tasks never share
// output and the grouped heads accumulate in a fixed order. Scratch: two kRows x T buffers per thread.
void attention_backward(const AttentionBackwardArgs& bp) {
  const AttentionArgs& p = bp.fwd;
  const int64_t B = p.B, T = p.T, Hq = p.Hq, Hkv = p.Hkv, D = p.D;
  if (B == 0 || T == 0 || Hq == 0 || D == 0) return;
  if (!bp.dq && !bp.dk && !bp.dv) return;
  const int64_t group = Hq / Hkv;
  constexpr int64_t kRows = 64;
  const int64_t nblk = ceil_div(T, kRows);
#pragma omp parallel
  {
    std::vector<float> P(static_cast<size_t>(std::min(T, kRows) * T)), dS(P.size());
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t hk = 0; hk < Hkv; ++hk) {
        const float* k = p.k + b * T * p.k_stride + hk * D;
        const float* v = p.v + b * T * p.v_stride + hk * D;
        float* dk = bp.dk ? bp.dk + b * T * bp.dk_stride + hk * D : nullptr;
        float* dv = bp.dv ? bp.dv + b * T * bp.dv_stride + hk * D : nullptr;
        for (int64_t t = 0; t < T; ++t) {
          if (dk) std::fill(dk + t * bp.dk_stride, dk + t * bp.dk_stride + D, 0.0f);
          if (dv) std::fill(dv + t * bp.dv_stride, dv + t * bp.dv_stride + D, 0.0f);
        }
        const float* mask = p.key_mask ? p.key_mask + b * T : nullptr;
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
          for (int64_t blk = 0; blk < nblk; ++blk) {
            const int64_t i0 = blk * kRows, rows = std::min(kRows, T - i0);
            const int64_t kend = p.causal ? i0 + rows : T;
            const float* q = p.q + (b * T + i0) * p.q_stride + h * D;
            const float* dO = bp.dout + (b * T + i0) * bp.dout_stride + h * D;
            gemm(false, true, rows, kend, D, p.scale, q, p.q_stride, k, p.k_stride, 0.0f, P.data(), kend);
            softmax_block(P.data(), rows, kend, i0, p.causal, mask);
            if (dv) gemm(true, false, kend, D, rows, 1.0f, P.data(), kend, dO, bp.dout_stride, 1.0f, dv, bp.dv_stride);
            if (!bp.dq && !dk) continue;
            gemm(false, true, rows, kend, D, 1.0f, dO, bp.dout_stride, v, p.v_stride, 0.0f, dS.data(), kend);
            for (int64_t r = 0; r < rows; ++r) {
              const float* pr = P.data() + r * kend;
              float* sr = dS.data() + r * kend;
              float delta = 0.0f;
#pragma omp simd reduction(+ : delta)
              for (int64_t j = 0; j < kend; ++j) delta += pr[j] * sr[j];
#pragma omp simd
              for (int64_t j = 0; j < kend; ++j) sr[j] = pr[j] * (sr[j] - delta);
            }
            if (bp.dq) {
              float* dq = bp.dq + (b * T + i0) * bp.dq_stride + h * D;
              gemm(false, false, rows, D, kend, p.scale, dS.data(), kend, k, p.k_stride, 0.0f, dq, bp.dq_stride);
            }
            if (dk) gemm(true, false, kend, D, rows, p.scale, dS.data(), kend, q, p.q_stride, 1.0f, dk, bp.dk_stride);
          }
      }
  }
}

double mse_loss(const float* s, const float* t, float* ds, int64_t n, float weight) {
  if (n <= 0) return 0.0;
  constexpr int64_t kBlock = 4096;
  const int64_t nblk = ceil_div(n, kBlock);
  std::vector<double> part(static_cast<size_t>(nblk));
  const float gscale = float(2.0 * double(weight) / double(n));
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const int64_t i0 = blk * kBlock, i1 = std::min(n, i0 + kBlock);
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = i0; i < i1; ++i) {
      const double d = double(s[i]) - double(t[i]);
      acc += d * d;
    }
    part[size_t(blk)] = acc;
    if (ds) {
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) ds[i] += gscale * (s[i] - t[i]);
    }
  }
  double sum = 0.0;
  for (double v : part) sum += v;
  return double(weight) * sum / double(n);
}

}  // namespace xv::cpu
