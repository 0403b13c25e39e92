// The CPU reference kernels of kernels/cpu/cpu_kernels.h, forward: f32, OpenMP across cores, OpenBLAS for
// GEMMs. The reference every other backend is tested against.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "kernels/cpu/cpu_kernels.h"

namespace xv::cpu {

void set_num_threads(int n) {
  if (n <= 0) return;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M),
              int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void linear(const float* x, int64_t ldx, const float* W, const float* b, float* y, int64_t ldy, int64_t M, int64_t K,
            int64_t N) {
  if (M == 0) return;
  if (b) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; ++i) std::copy(b, b + N, y + i * ldy);
  }
  gemm(false, true, M, N, K, 1.0f, x, ldx, W, K, b ? 1.0f : 0.0f, y, ldy);
}

void layernorm(const float* x, const float* g, const float* b, float* y, int64_t rows, int64_t C, float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    // Two passes in f32 (mean, then the centred second moment), vectorised; the reference sums in f32 too.
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += xr[c];
    const float mean = sum / float(C);
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int64_t c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    const float rstd = 1.0f / std::sqrt(var / float(C) + eps);
    if (b) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mean) * rstd * g[c] + b[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mean) * rstd * g[c];
    }
  }
}

void rmsnorm(const float* x, const float* g, float* y, int64_t rows, int64_t C, float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
    const float rstd = 1.0f / std::sqrt(ss / float(C) + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = g[c] * (xr[c] * rstd);
  }
}

void gelu_erf(float* x, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + vec::erf(x[i] * float(M_SQRT1_2)));
}

void gelu_tanh(float* x, int64_t n) {
  const float k = std::sqrt(2.0f / float(M_PI));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void quick_gelu(float* x, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + vec::exp(-1.702f * x[i]));
}

void silu(float* x, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + vec::exp(-x[i]));
}

void swiglu(const float* gate_up, float* out, int64_t rows, int64_t I) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * I;
    const float* u = g + I;
    float* o = out + r * I;
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) o[i] = u[i] * (g[i] / (1.0f + vec::exp(-g[i])));
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void rope_tables(int64_t T, int64_t rot_dim, double base, const float* ext, float mscale, float* cos, float* sin) {
  const int64_t half = rot_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // As the reference: exponent computed in f32 (arange(0, dim, 2).float() / dim), then base ** it.
    float expo = float(2 * i) / float(rot_dim);
    float p = std::pow(float(base), expo);
    inv_freq[size_t(i)] = 1.0f / ((ext ? ext[i] : 1.0f) * p);
  }
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      float a = float(t) * inv_freq[size_t(i)];
      float c = std::cos(a) * mscale, s = std::sin(a) * mscale;
      cos[t * rot_dim + i] = cos[t * rot_dim + i + half] = c;
      sin[t * rot_dim + i] = sin[t * rot_dim + i + half] = s;
    }
  }
}

void rope(float* x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, int64_t row_stride,
          const float* cos, const float* sin) {
  const int64_t half = rot_dim / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const float* c = cos + t * rot_dim;
      const float* s = sin + t * rot_dim;
      for (int64_t h = 0; h < H; ++h) {
        float* v = x + (b * T + t) * row_stride + h * D;
        for (int64_t i = 0; i < half; ++i) {
          float x1 = v[i], x2 = v[i + half];
          // q*cos + rotate_half(q)*sin, rotate_half(q) = [-x2, x1]
          v[i] = x1 * c[i] - x2 * s[i];
          v[i + half] = x2 * c[i + half] + x1 * s[i + half];
        }
      }
    }
}

void attention(const AttentionArgs& p) {
  const int64_t B = p.B, T = p.T, Hq = p.Hq, Hkv = p.Hkv, D = p.D;
  const int64_t group = Hq / Hkv;
  // Per (batch, head, block of kRows queries): S (rows, kend) = scale * Q K^T and O = softmax(S) V as two
  // GEMMs over the strided rows, where kend stops at the block's last query when causal (no work above the
  // diagonal). Work items run in parallel, each GEMM single-threaded (OpenBLAS's OpenMP build inside a
  // parallel region). S holds kRows x T floats per thread.
  constexpr int64_t kRows = 64;
  const int64_t nblk = (T + kRows - 1) / kRows;
#pragma omp parallel
  {
    std::vector<float> S(static_cast<size_t>(std::min(T, kRows) * T));
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t blk = 0; blk < nblk; ++blk) {
          const int64_t hk = h / group, i0 = blk * kRows, rows = std::min(kRows, T - i0);
          const int64_t kend = p.causal ? i0 + rows : T;
          const float* q = p.q + (b * T + i0) * p.q_stride + h * D;
          const float* k = p.k + b * T * p.k_stride + hk * D;
          const float* v = p.v + b * T * p.v_stride + hk * D;
          float* o = p.o + (b * T + i0) * p.o_stride + h * D;
          const float* mask = p.key_mask ? p.key_mask + b * T : nullptr;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(kend), int(D), p.scale, q,
                      int(p.q_stride), k, int(p.k_stride), 0.0f, S.data(), int(kend));
          for (int64_t r = 0; r < rows; ++r) {
            float* s = S.data() + r * kend;
            const int64_t jend = p.causal ? i0 + r + 1 : kend;
            if (mask)
              for (int64_t j = 0; j < jend; ++j)
                if (mask[j] == 0.0f) s[j] = -INFINITY;
            // The row maximum over 16 independent lanes (a single running max is one long dependency chain);
            // max is exact, so the lanes give the same value in any order (NaN scores are skipped either way).
            float lane[16];
            std::fill(lane, lane + 16, -INFINITY);
            int64_t j = 0;
            for (; j + 16 <= jend; j += 16)
              for (int u = 0; u < 16; ++u) lane[u] = std::max(lane[u], s[j + u]);
            for (; j < jend; ++j) lane[0] = std::max(lane[0], s[j]);
            float mx = lane[0];
            for (int u = 1; u < 16; ++u) mx = std::max(mx, lane[u]);
            if (mx == -INFINITY) {  // every key masked: zeros, never NaN
              std::fill(s, s + kend, 0.0f);
              if (p.lse) p.lse[(b * Hq + h) * T + i0 + r] = -INFINITY;
              continue;
            }
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < jend; ++j) {
              const float e = vec::exp(s[j] - mx);  // exp(-inf) is 0
              s[j] = e;
              sum += e;
            }
            const float inv = 1.0f / sum;
            if (p.lse) p.lse[(b * Hq + h) * T + i0 + r] = mx + std::log(sum);
#pragma omp simd
            for (int64_t j = 0; j < jend; ++j) s[j] *= inv;
            std::fill(s + jend, s + kend, 0.0f);
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(D), int(kend), 1.0f, S.data(),
                      int(kend), v, int(p.v_stride), 0.0f, o, int(p.o_stride));
        }
  }
}

void l2_normalize(float* x, int64_t rows, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * C;
    double ss = 0.0;
    for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * xr[c];
    // sentence-transformers / torch.nn.functional.normalize: x / max(||x||, 1e-12)
    float inv = float(1.0 / std::max(std::sqrt(ss), 1e-12));
    for (int64_t c = 0; c < C; ++c) xr[c] *= inv;
  }
}

}  // namespace xv::cpu
