// The CPU reference kernels of kernels/cpu/cpu_kernels.h that move rows (gathers, scatters, im2col,
// broadcast adds), pool, drop out and update parameters. What were host loops in the model, KD and trainer
// files, with the same arithmetic in the same order.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace xv::cpu {

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

void scale(float* x, int64_t n, float alpha) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= alpha;
}

void add_rows(float* x, int64_t x_stride, int64_t rows, int64_t C, const float* src, int64_t src_rows,
              int64_t src_stride) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * x_stride;
    const float* s = src + (r % src_rows) * src_stride;
    for (int64_t c = 0; c < C; ++c) xr[c] = xr[c] + s[c];
  }
}

void gather_rows(const float* a, int64_t a_stride, const float* b, int64_t b_stride, const int32_t* idx, int64_t n,
                 int64_t C, float* out, int64_t out_stride) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = idx[i];
    const float* from = k >= 0 ? a + k * a_stride : b + (-1 - k) * b_stride;
    std::copy(from, from + C, out + i * out_stride);
  }
}

void copy_rows(const float* src, int64_t src_stride, const int32_t* idx, int64_t n, int64_t C, float* dst,
               int64_t dst_stride) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] >= 0) std::copy(src + i * src_stride, src + i * src_stride + C, dst + int64_t(idx[i]) * dst_stride);
}

// Each task owns a column range and walks all n rows in order: repeated destinations accumulate without
// atomics and in a fixed order.
void scatter_add_rows(const float* src, int64_t src_stride, const int32_t* idx, int64_t n, int64_t C, float* a,
                      int64_t a_stride, float* b, int64_t b_stride) {
  if (n == 0 || C == 0 || (!a && !b)) return;
  constexpr int64_t kCols = 64;
  const int64_t nchunk = ceil_div(C, kCols);
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < nchunk; ++ch) {
    const int64_t c0 = ch * kCols, c1 = std::min(C, c0 + kCols);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = idx[i];
      float* t = k >= 0 ? (a ? a + k * a_stride : nullptr) : (b ? b + (-1 - k) * b_stride : nullptr);
      if (!t) continue;
      const float* d = src + i * src_stride;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) t[c] += d[c];
    }
  }
}

void im2col_patches(const float* pixels, int64_t N, int64_t CH, int64_t S, int64_t P, float* cols) {
  const int64_t G = S / P, NP = G * G, K = CH * P * P;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < NP; ++g) {
      const int64_t gy = g / G, gx = g % G;
      float* dst = cols + (n * NP + g) * K;
      for (int64_t c = 0; c < CH; ++c)
        for (int64_t ky = 0; ky < P; ++ky) {
          const float* src = pixels + ((n * CH + c) * S + gy * P + ky) * S + gx * P;
          std::copy(src, src + P, dst + (c * P + ky) * P);
        }
    }
}

// Positions in order per row; sentence-transformers clamps the count at 1e-9.
void masked_mean_rows(const float* x, const float* mask, int64_t B, int64_t T, int64_t C, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    float* o = out + b * C;
    std::fill(o, o + C, 0.0f);
    float n = 0.0f;
    for (int64_t t = 0; t < T; ++t) {
      const float m = mask[b * T + t];
      if (m == 0.0f) continue;
      n += m;
      const float* h = x + (b * T + t) * C;
      for (int64_t c = 0; c < C; ++c) o[c] += h[c] * m;
    }
    const float inv = 1.0f / std::max(n, 1e-9f);
    for (int64_t c = 0; c < C; ++c) o[c] *= inv;
  }
}

void masked_mean_rows_backward(const float* dout, const float* mask, int64_t B, int64_t T, int64_t C, float* dx) {
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    float n = 0.0f;
    for (int64_t t = 0; t < T; ++t) n += mask[b * T + t];
    const float inv = 1.0f / std::max(n, 1e-9f);
    for (int64_t t = 0; t < T; ++t) {
      float* d = dx + (b * T + t) * C;
      const float m = mask[b * T + t] * inv;
      if (m == 0.0f) {
        std::fill(d, d + C, 0.0f);
        continue;
      }
      for (int64_t c = 0; c < C; ++c) d[c] = dout[b * C + c] * m;
    }
  }
}

// A splitmix64 hash of (seed, i) compared with p. Inverted-dropout scale 1/(1-p).
bool dropout_keep(uint64_t seed, uint64_t i, float p) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return double(z >> 11) * (1.0 / 9007199254740992.0) >= double(p);
}

void dropout(const float* x, int64_t n, uint64_t seed, float p, float* out) {
  const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = dropout_keep(seed, uint64_t(i), p) ? x[i] * scale : 0.0f;
}

void dropout_backward_add(const float* din, int64_t n, uint64_t seed, float p, float* dx) {
  const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    if (dropout_keep(seed, uint64_t(i), p)) dx[i] += din[i] * scale;
}

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, int64_t t, float beta1,
                  float beta2, float eps, float weight_decay) {
  // torch.optim.AdamW (single-tensor path), in f32: decay first, then the moments, then the update.
  // The bias corrections are Python floats (double) there, as here.
  const float b1 = beta1, b2 = beta2;
  const double bc1 = 1.0 - std::pow(double(b1), double(t));
  const double bc2 = 1.0 - std::pow(double(b2), double(t));
  const float step_size = float(double(lr) / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  const float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= decay;
    m[i] = m[i] + (g[i] - m[i]) * (1.0f - b1);  // torch: exp_avg.lerp_(grad, 1 - beta1)
    v[i] = v[i] * b2 + (1.0f - b2) * g[i] * g[i];
    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    p[i] += -step_size * (m[i] / denom);
  }
}

std::vector<double> sum_squares_chunks(const float* x, int64_t n, int64_t chunk) {
  std::vector<double> s(size_t(ceil_div(n, chunk)), 0.0);
  for (size_t c = 0; c < s.size(); ++c) {
    double acc = 0.0;
    const int64_t i0 = int64_t(c) * chunk, i1 = std::min(n, i0 + chunk);
    for (int64_t i = i0; i < i1; ++i) acc += double(x[i]) * x[i];
    s[c] = acc;
  }
  return s;
}

}  // namespace xv::cpu
