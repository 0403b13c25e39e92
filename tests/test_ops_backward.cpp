// The CPU backward ops against central finite differences of small double-precision forwards written here
// (independent of kernels/cpu). Each check prints its max error relative to the gradient's max magnitude.
//
// FD in double with step 1e-5 is accurate to ~1e-9 relative here, far below the f32 backward's own error,
// so the tolerance (kTol = 1e-5, relative to max |grad|) measures the backward alone; f32 lands near 1e-7.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace {

using Vd = std::vector<double>;
using Vf = std::vector<float>;
constexpr double kTol = 1e-5;
constexpr double kStep = 1e-5;

Vf randv(size_t n, uint32_t seed, float scale = 1.0f, float mean = 0.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(mean, scale);
  Vf v(n);
  for (auto& x : v) x = d(g);
  return v;
}

Vd to_d(const Vf& v) { return Vd(v.begin(), v.end()); }

// Central-difference gradient of loss() with respect to every element of p (perturbed in place, restored).
Vd fd_grad(Vd& p, const std::function<double()>& loss) {
  Vd g(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const double keep = p[i];
    p[i] = keep + kStep;
    const double lp = loss();
    p[i] = keep - kStep;
    const double lm = loss();
    p[i] = keep;
    g[i] = (lp - lm) / (2 * kStep);
  }
  return g;
}

double dot(const Vd& a, const Vd& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// max |got - ref| / max |ref| (got minus `base` when checking accumulation), printed and returned.
double rel_err(const std::string& name, const float* got, const Vd& ref, const float* base = nullptr) {
  double mx = 0, err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    mx = std::max(mx, std::abs(ref[i]));
    const double g = double(got[i]) - (base ? double(base[i]) : 0.0);
    err = std::max(err, std::abs(g - ref[i]));
  }
  const double rel = mx > 0 ? err / mx : err;
  std::printf("  [max err] %-40s %.3e (max |grad| %.3e)\n", name.c_str(), rel, mx);
  return rel;
}

#define EXPECT_GRAD(name, got, ref, ...) EXPECT_LT(rel_err(name, got, ref __VA_OPT__(, ) __VA_ARGS__), kTol) << name

// ----------------------------------------------------------------------------------------------- linear

TEST(OpsBackward, Linear) {
  const int64_t M = 4, K = 7, N = 5;
  const Vf x = randv(size_t(M * K), 1), W = randv(size_t(N * K), 2), b = randv(size_t(N), 3), R = randv(size_t(M * N), 4);
  for (bool bias : {true, false}) {
    Vd xd = to_d(x), Wd = to_d(W), bd = to_d(b);
    auto loss = [&] {
      double L = 0;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t n = 0; n < N; ++n) {
          double y = bias ? bd[size_t(n)] : 0.0;
          for (int64_t k = 0; k < K; ++k) y += xd[size_t(i * K + k)] * Wd[size_t(n * K + k)];
          L += y * R[size_t(i * N + n)];
        }
      return L;
    };
    const Vd gx = fd_grad(xd, loss), gW = fd_grad(Wd, loss), gb = fd_grad(bd, loss);
    Vf dx(size_t(M * K), 9.0f), dW(size_t(N * K), 0.0f), db(size_t(N), 0.0f);
    const std::string tag = bias ? " (bias)" : " (no bias)";
    for (int call = 1; call <= 2; ++call) {  // dx overwritten, dW and db accumulate
      xv::cpu::linear_backward(x.data(), K, W.data(), R.data(), N, dx.data(), K, dW.data(), bias ? db.data() : nullptr, M, K, N);
      Vd gW2 = gW, gb2 = gb;
      for (auto& v : gW2) v *= call;
      for (auto& v : gb2) v *= call;
      EXPECT_GRAD("linear dx" + tag, dx.data(), gx);
      EXPECT_GRAD("linear dW x" + std::to_string(call) + tag, dW.data(), gW2);
      if (bias) {
        EXPECT_GRAD("linear db x" + std::to_string(call) + tag, db.data(), gb2);
      }
    }
  }
  // Null gradients are skipped; only dW requested leaves the others alone.
  Vf dW(size_t(N * K), 0.0f);
  xv::cpu::linear_backward(x.data(), K, W.data(), R.data(), N, nullptr, K, dW.data(), nullptr, M, K, N);
  xv::cpu::linear_backward(x.data(), K, W.data(), R.data(), N, nullptr, K, nullptr, nullptr, M, K, N);
}

TEST(OpsBackward, LinearBiasManyRows) {  // db sums across several row blocks
  const int64_t M = 200, K = 3, N = 70;
  const Vf x = randv(size_t(M * K), 5), W = randv(size_t(N * K), 6), R = randv(size_t(M * N), 7);
  Vd gb(size_t(N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t n = 0; n < N; ++n) gb[size_t(n)] += R[size_t(i * N + n)];  // dL/db of a linear loss, exact
  Vf db(size_t(N), 0.0f);
  xv::cpu::linear_backward(x.data(), K, W.data(), R.data(), N, nullptr, K, nullptr, db.data(), M, K, N);
  EXPECT_GRAD("linear db (200 rows)", db.data(), gb);
}

// ------------------------------------------------------------------------------------------------ norms

struct NormShape {
  int64_t rows, C;
};

TEST(OpsBackward, LayerNorm) {
  for (NormShape s : {NormShape{5, 37}, NormShape{70, 9}}) {
    const int64_t rows = s.rows, C = s.C;
    const float eps = 1e-5f;
    const Vf x = randv(size_t(rows * C), 11, 2.0f, 0.5f), g = randv(size_t(C), 12, 1.0f, 1.0f),
             b = randv(size_t(C), 13), R = randv(size_t(rows * C), 14);
    Vd xd = to_d(x), gd = to_d(g), bd = to_d(b);
    auto loss = [&] {
      double L = 0;
      for (int64_t r = 0; r < rows; ++r) {
        double mean = 0, var = 0;
        for (int64_t c = 0; c < C; ++c) mean += xd[size_t(r * C + c)];
        mean /= double(C);
        for (int64_t c = 0; c < C; ++c) var += (xd[size_t(r * C + c)] - mean) * (xd[size_t(r * C + c)] - mean);
        const double rstd = 1.0 / std::sqrt(var / double(C) + double(eps));
        for (int64_t c = 0; c < C; ++c)
          L += ((xd[size_t(r * C + c)] - mean) * rstd * gd[size_t(c)] + bd[size_t(c)]) * R[size_t(r * C + c)];
      }
      return L;
    };
    const Vd gx = fd_grad(xd, loss), gg = fd_grad(gd, loss), gb = fd_grad(bd, loss);
    Vf dx(size_t(rows * C), -3.0f);
    const Vf dg0 = randv(size_t(C), 15), db0 = randv(size_t(C), 16);  // accumulated onto
    Vf dg = dg0, db = db0;
    xv::cpu::layernorm_backward(x.data(), g.data(), R.data(), dx.data(), dg.data(), db.data(), rows, C, eps);
    const std::string tag = " (" + std::to_string(rows) + "x" + std::to_string(C) + ")";
    EXPECT_GRAD("layernorm dx" + tag, dx.data(), gx);
    EXPECT_GRAD("layernorm dg (+=)" + tag, dg.data(), gg, dg0.data());
    EXPECT_GRAD("layernorm db (+=)" + tag, db.data(), gb, db0.data());
    // Null gradients skipped.
    Vf dx2(size_t(rows * C));
    xv::cpu::layernorm_backward(x.data(), g.data(), R.data(), dx2.data(), nullptr, nullptr, rows, C, eps);
    EXPECT_EQ(dx2, dx);
    xv::cpu::layernorm_backward(x.data(), g.data(), R.data(), nullptr, nullptr, nullptr, rows, C, eps);
  }
}

TEST(OpsBackward, RmsNorm) {
  for (NormShape s : {NormShape{5, 37}, NormShape{70, 9}}) {
    const int64_t rows = s.rows, C = s.C;
    const float eps = 1e-6f;
    const Vf x = randv(size_t(rows * C), 21, 1.5f, 0.3f), g = randv(size_t(C), 22, 1.0f, 1.0f),
             R = randv(size_t(rows * C), 23);
    Vd xd = to_d(x), gd = to_d(g);
    auto loss = [&] {
      double L = 0;
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t c = 0; c < C; ++c) ss += xd[size_t(r * C + c)] * xd[size_t(r * C + c)];
        const double rstd = 1.0 / std::sqrt(ss / double(C) + double(eps));
        for (int64_t c = 0; c < C; ++c) L += xd[size_t(r * C + c)] * rstd * gd[size_t(c)] * R[size_t(r * C + c)];
      }
      return L;
    };
    const Vd gx = fd_grad(xd, loss), gg = fd_grad(gd, loss);
    Vf dx(size_t(rows * C), 4.0f);
    const Vf dg0 = randv(size_t(C), 24);
    Vf dg = dg0;
    xv::cpu::rmsnorm_backward(x.data(), g.data(), R.data(), dx.data(), dg.data(), rows, C, eps);
    const std::string tag = " (" + std::to_string(rows) + "x" + std::to_string(C) + ")";
    EXPECT_GRAD("rmsnorm dx" + tag, dx.data(), gx);
    EXPECT_GRAD("rmsnorm dg (+=)" + tag, dg.data(), gg, dg0.data());
    xv::cpu::rmsnorm_backward(x.data(), g.data(), R.data(), nullptr, nullptr, rows, C, eps);
  }
}

// ------------------------------------------------------------------------------------------ activations

struct Activation {
  const char* name;
  double (*f)(double);
  void (*backward)(const float*, const float*, float*, int64_t);
};

TEST(OpsBackward, Activations) {
  const Activation acts[] = {
      {"gelu_erf", [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); },
       xv::cpu::gelu_erf_backward},
      {"gelu_tanh",
       [](double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x))); },
       xv::cpu::gelu_tanh_backward},
      {"quick_gelu", [](double x) { return x / (1.0 + std::exp(-1.702 * x)); }, xv::cpu::quick_gelu_backward},
      {"silu", [](double x) { return x / (1.0 + std::exp(-x)); }, xv::cpu::silu_backward},
  };
  // A sweep over [-8, 8], random points, and the tails.
  Vf x;
  for (int i = 0; i <= 400; ++i) x.push_back(-8.0f + 0.04f * float(i));
  for (float v : randv(600, 31, 3.0f)) x.push_back(v);
  for (float v : {0.0f, -20.0f, 20.0f, -90.0f, 90.0f, 1e-4f, -1e-4f}) x.push_back(v);
  const int64_t n = int64_t(x.size());
  const Vf dy = randv(x.size(), 32);
  for (const Activation& a : acts) {
    Vd ref(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double xv = x[i];
      ref[i] = double(dy[i]) * (a.f(xv + kStep) - a.f(xv - kStep)) / (2 * kStep);
    }
    Vf dx(x.size(), 7.0f);
    a.backward(x.data(), dy.data(), dx.data(), n);
    EXPECT_GRAD(std::string(a.name) + " dx", dx.data(), ref);
    for (float v : dx) ASSERT_TRUE(std::isfinite(v)) << a.name;
    Vf inplace = dy;  // dx aliasing dy
    a.backward(x.data(), inplace.data(), inplace.data(), n);
    EXPECT_EQ(inplace, dx) << a.name;
  }
}

TEST(OpsBackward, SwiGLU) {
  const int64_t rows = 3, I = 11;
  const Vf gu = randv(size_t(rows * 2 * I), 41, 2.0f), R = randv(size_t(rows * I), 42);
  Vd gud = to_d(gu);
  auto loss = [&] {
    double L = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < I; ++i) {
        const double g = gud[size_t(r * 2 * I + i)], u = gud[size_t(r * 2 * I + I + i)];
        L += g / (1.0 + std::exp(-g)) * u * R[size_t(r * I + i)];
      }
    return L;
  };
  const Vd ref = fd_grad(gud, loss);
  Vf d(size_t(rows * 2 * I), -5.0f);
  xv::cpu::swiglu_backward(gu.data(), R.data(), d.data(), rows, I);
  EXPECT_GRAD("swiglu dgate_up", d.data(), ref);
}

// ------------------------------------------------------------------------------------------------- rope

// rope in double over the whole strided buffer (columns outside the heads and the rotated dims untouched).
Vd rope_ref(const Vd& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot, int64_t stride, const Vf& cs,
            const Vf& sn) {
  Vd y = x;
  const int64_t half = rot / 2;
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const int64_t t = bt % T, o = bt * stride + h * D;
        const double x1 = x[size_t(o + i)], x2 = x[size_t(o + i + half)];
        y[size_t(o + i)] = x1 * cs[size_t(t * rot + i)] - x2 * sn[size_t(t * rot + i)];
        y[size_t(o + i + half)] = x2 * cs[size_t(t * rot + i + half)] + x1 * sn[size_t(t * rot + i + half)];
      }
  return y;
}

TEST(OpsBackward, Rope) {
  const int64_t B = 2, T = 5, H = 3, D = 8, stride = H * D + 2 * D;  // q heads inside a wider qkv row
  const Vf ext = {1.0f, 2.5f, 4.0f, 8.0f};
  struct Case {
    const char* name;
    int64_t rot;
    bool random_tables;
    float mscale;
  };
  for (Case c : {Case{"full, mscale 1.2", D, false, 1.2f}, Case{"partial rot_dim 4", 4, false, 1.0f},
                 Case{"random tables", D, true, 1.0f}}) {
    Vf cs(size_t(T * c.rot)), sn(size_t(T * c.rot));
    if (c.random_tables) {
      cs = randv(cs.size(), 51), sn = randv(sn.size(), 52);  // halves differ: the exact transpose is tested
    } else {
      xv::cpu::rope_tables(T, c.rot, 10000.0, c.rot == D ? ext.data() : nullptr, c.mscale, cs.data(), sn.data());
    }
    const size_t n = size_t(B * T * stride);
    const Vf x = randv(n, 53), R = randv(n, 54);
    Vd xd = to_d(x);
    const Vd Rd = to_d(R);
    auto loss = [&] { return dot(rope_ref(xd, B, T, H, D, c.rot, stride, cs, sn), Rd); };
    const Vd ref = fd_grad(xd, loss);
    Vf d = R;
    xv::cpu::rope_backward(d.data(), B, T, H, D, c.rot, stride, cs.data(), sn.data());
    EXPECT_GRAD(std::string("rope dx (") + c.name + ")", d.data(), ref);

    // Adjoint: <rope(x), y> == <x, rope_backward(y)>, both through the f32 ops.
    Vf rx = x;
    xv::cpu::rope(rx.data(), B, T, H, D, c.rot, stride, cs.data(), sn.data());
    const double lhs = dot(to_d(rx), Rd), rhs = dot(to_d(x), to_d(d));
    const double adj = std::abs(lhs - rhs) / std::max(std::abs(lhs), 1.0);
    std::printf("  [max err] %-40s %.3e\n", (std::string("rope adjoint (") + c.name + ")").c_str(), adj);
    EXPECT_LT(adj, 1e-5) << c.name;

    // With plain tables (mscale 1) the backward is the inverse rotation: rope_backward(rope(x)) == x.
    if (!c.random_tables && c.mscale == 1.0f) {
      Vf back = rx;
      xv::cpu::rope_backward(back.data(), B, T, H, D, c.rot, stride, cs.data(), sn.data());
      EXPECT_GRAD(std::string("rope inverse (") + c.name + ")", back.data(), to_d(x));
    }
  }
}

// -------------------------------------------------------------------------------------------- attention

struct AttnCase {
  const char* name;
  int64_t B, T, Hq, Hkv, D;
  bool causal;
  std::vector<float> mask;  // (B, T) or empty
};

// Output (B, T, Hq, D) of softmax(scale q k^T + mask) v in double, q, k, v interleaved in one qkv buffer
// (B, T, (Hq + 2 Hkv) D). Fully masked rows give zeros.
Vd attention_ref(const Vd& qkv, const AttnCase& c, double scale) {
  const int64_t QKV = (c.Hq + 2 * c.Hkv) * c.D, group = c.Hq / c.Hkv;
  Vd o(size_t(c.B * c.T * c.Hq * c.D), 0.0);
  Vd s(size_t(c.T));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.T; ++i) {
        const double* q = qkv.data() + (b * c.T + i) * QKV + h * c.D;
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.T; ++j) {
          s[size_t(j)] = -INFINITY;
          if (c.causal && j > i) continue;
          if (!c.mask.empty() && c.mask[size_t(b * c.T + j)] == 0.0f) continue;
          const double* k = qkv.data() + (b * c.T + j) * QKV + (c.Hq + h / group) * c.D;
          double acc = 0;
          for (int64_t d = 0; d < c.D; ++d) acc += q[d] * k[d];
          s[size_t(j)] = acc * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        if (mx == -INFINITY) continue;
        double z = 0;
        for (auto& v : s) z += (v = std::exp(v - mx));
        double* out = o.data() + ((b * c.T + i) * c.Hq + h) * c.D;
        for (int64_t j = 0; j < c.T; ++j) {
          if (s[size_t(j)] == 0.0) continue;
          const double* v = qkv.data() + (b * c.T + j) * QKV + (c.Hq + c.Hkv + h / group) * c.D;
          for (int64_t d = 0; d < c.D; ++d) out[d] += s[size_t(j)] / z * v[d];
        }
      }
  return o;
}

// Runs attention_backward on an interleaved qkv buffer, gradients into an interleaved dqkv buffer (prefilled
// with garbage: it must be overwritten), dout rows padded to a wider stride. Returns dqkv.
Vf run_attention_backward(const AttnCase& c, const Vf& qkv, const Vf& R, float scale, bool want_q = true,
                          bool want_k = true, bool want_v = true) {
  const int64_t QKV = (c.Hq + 2 * c.Hkv) * c.D, O = c.Hq * c.D, dstride = O + 3;
  Vf dout(size_t(c.B * c.T * dstride), 1e9f);
  for (int64_t r = 0; r < c.B * c.T; ++r)
    std::copy(R.begin() + r * O, R.begin() + (r + 1) * O, dout.begin() + r * dstride);
  Vf dqkv(qkv.size(), 5.0f);
  xv::cpu::AttentionBackwardArgs bp;
  auto& p = bp.fwd;
  p.q = qkv.data(), p.k = qkv.data() + c.Hq * c.D, p.v = qkv.data() + (c.Hq + c.Hkv) * c.D;
  p.q_stride = p.k_stride = p.v_stride = QKV;
  p.B = c.B, p.T = c.T, p.Hq = c.Hq, p.Hkv = c.Hkv, p.D = c.D, p.causal = c.causal, p.scale = scale;
  p.key_mask = c.mask.empty() ? nullptr : c.mask.data();
  bp.dout = dout.data(), bp.dout_stride = dstride;
  bp.dq = want_q ? dqkv.data() : nullptr;
  bp.dk = want_k ? dqkv.data() + c.Hq * c.D : nullptr;
  bp.dv = want_v ? dqkv.data() + (c.Hq + c.Hkv) * c.D : nullptr;
  bp.dq_stride = bp.dk_stride = bp.dv_stride = QKV;
  xv::cpu::attention_backward(bp);
  return dqkv;
}

void check_attention(const AttnCase& c, uint32_t seed) {
  const int64_t QKV = (c.Hq + 2 * c.Hkv) * c.D;
  const float scale = 1.0f / std::sqrt(float(c.D));
  const Vf qkv = randv(size_t(c.B * c.T * QKV), seed), R = randv(size_t(c.B * c.T * c.Hq * c.D), seed + 1);
  Vd qd = to_d(qkv);
  const Vd Rd = to_d(R);
  auto loss = [&] { return dot(attention_ref(qd, c, double(scale)), Rd); };
  const Vd ref = fd_grad(qd, loss);
  const Vf dqkv = run_attention_backward(c, qkv, R, scale);
  EXPECT_GRAD(std::string("attention dqkv (") + c.name + ")", dqkv.data(), ref);
}

std::vector<float> pad_mask(int64_t B, int64_t T, int64_t b, int64_t len) {
  std::vector<float> m(size_t(B * T), 1.0f);
  for (int64_t t = len; t < T; ++t) m[size_t(b * T + t)] = 0.0f;
  return m;
}

TEST(OpsBackward, AttentionBidirectionalPadded) {
  check_attention({"bidirectional, padded", 2, 6, 2, 2, 4, false, pad_mask(2, 6, 1, 4)}, 61);
}

TEST(OpsBackward, AttentionCausal) { check_attention({"causal", 2, 6, 2, 2, 4, true, {}}, 62); }

TEST(OpsBackward, AttentionGroupedQuery) {
  const AttnCase bi{"GQA 4/2, bidirectional, padded", 2, 5, 4, 2, 4, false, pad_mask(2, 5, 0, 3)};
  const AttnCase ca{"GQA 4/2, causal, padded", 2, 5, 4, 2, 4, true, pad_mask(2, 5, 1, 4)};
  check_attention(bi, 63);
  check_attention(ca, 64);
  // Asking for a subset leaves the other slices untouched and gives the same numbers.
  const int64_t QKV = (ca.Hq + 2 * ca.Hkv) * ca.D;
  const float scale = 0.5f;
  const Vf qkv = randv(size_t(ca.B * ca.T * QKV), 65), R = randv(size_t(ca.B * ca.T * ca.Hq * ca.D), 66);
  const Vf all = run_attention_backward(ca, qkv, R, scale);
  const Vf q_only = run_attention_backward(ca, qkv, R, scale, true, false, false);
  const Vf kv_only = run_attention_backward(ca, qkv, R, scale, false, true, true);
  const Vf v_only = run_attention_backward(ca, qkv, R, scale, false, false, true);
  for (int64_t r = 0; r < ca.B * ca.T; ++r)
    for (int64_t c = 0; c < QKV; ++c) {
      const size_t i = size_t(r * QKV + c);
      const bool is_q = c < ca.Hq * ca.D, is_v = c >= (ca.Hq + ca.Hkv) * ca.D;
      EXPECT_EQ(q_only[i], is_q ? all[i] : 5.0f);
      EXPECT_EQ(kv_only[i], is_q ? 5.0f : all[i]);
      EXPECT_EQ(v_only[i], is_v ? all[i] : 5.0f);
    }
}

TEST(OpsBackward, AttentionFullyMaskedRows) {
  // Batch 0, causal, key 0 masked: query row 0 sees no key. Batch 1: every key masked.
  std::vector<float> mask = {0, 1, 1, 1, 0, 0, 0, 0};
  const AttnCase c{"fully masked rows", 2, 4, 2, 1, 4, true, mask};
  check_attention(c, 71);
  const int64_t QKV = (c.Hq + 2 * c.Hkv) * c.D;
  const Vf qkv = randv(size_t(c.B * c.T * QKV), 72), R = randv(size_t(c.B * c.T * c.Hq * c.D), 73);
  const Vf d = run_attention_backward(c, qkv, R, 0.5f);
  for (int64_t col = 0; col < c.Hq * c.D; ++col) EXPECT_EQ(d[size_t(col)], 0.0f) << "dq of batch 0 row 0";
  for (int64_t i = c.T * QKV; i < 2 * c.T * QKV; ++i) EXPECT_EQ(d[size_t(i)], 0.0f) << "batch 1 at " << i;
  for (float v : d) ASSERT_TRUE(std::isfinite(v));
}

TEST(OpsBackward, AttentionSeveralQueryBlocks) {  // T beyond the 64-row query block, causal and padded
  check_attention({"T 67, causal, padded", 1, 67, 2, 1, 4, true, pad_mask(1, 67, 0, 60)}, 81);
}

// ------------------------------------------------------------------------------------ embedding, mse

TEST(OpsBackward, Embedding) {
  const int64_t vocab = 7, C = 70, n = 9;  // C spans two column chunks
  const std::vector<int32_t> ids = {3, 1, 3, 0, 6, 3, 1, 2, 3};
  const Vf table = randv(size_t(vocab * C), 91), R = randv(size_t(n * C), 92);
  Vd td = to_d(table);
  auto loss = [&] {
    double L = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < C; ++c) L += td[size_t(ids[size_t(i)] * C + c)] * R[size_t(i * C + c)];
    return L;
  };
  const Vd ref = fd_grad(td, loss);
  Vf dtable = table;  // accumulated onto
  xv::cpu::scatter_add_rows(R.data(), C, ids.data(), n, C, dtable.data(), C, nullptr, 0);
  EXPECT_GRAD("embedding dtable (+=)", dtable.data(), ref, table.data());
  for (int64_t row : {4, 5})
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(dtable[size_t(row * C + c)], table[size_t(row * C + c)]);
  xv::cpu::scatter_add_rows(R.data(), C, ids.data(), n, C, nullptr, C, nullptr, 0);
}

TEST(OpsBackward, MseLoss) {
  const int64_t n = 5000;  // two 4096-element blocks
  const float weight = 0.7f;
  const Vf s = randv(size_t(n), 101), t = randv(size_t(n), 102);
  Vd sd = to_d(s);
  auto loss = [&] {
    double L = 0;
    for (int64_t i = 0; i < n; ++i) L += (sd[size_t(i)] - t[size_t(i)]) * (sd[size_t(i)] - t[size_t(i)]);
    return double(weight) * L / double(n);
  };
  const double want = loss();
  const Vd ref = fd_grad(sd, loss);
  const Vf ds0 = randv(size_t(n), 103, 1e-3f);
  Vf ds = ds0;
  const double got = xv::cpu::mse_loss(s.data(), t.data(), ds.data(), n, weight);
  const double verr = std::abs(got - want) / want;
  std::printf("  [max err] %-40s %.3e\n", "mse_loss value", verr);
  EXPECT_LT(verr, 1e-12);
  EXPECT_GRAD("mse_loss ds (+=)", ds.data(), ref, ds0.data());
  EXPECT_EQ(xv::cpu::mse_loss(s.data(), t.data(), nullptr, n, weight), got);
  EXPECT_EQ(xv::cpu::mse_loss(s.data(), t.data(), nullptr, 0, weight), 0.0);
}

// ---------------------------------------------------------------------------------------------- threads

// The row reductions (dg, db, embedding scatter, the MSE sum) and attention's grouped dk/dv accumulation run
// in a fixed order: bit-identical results for any thread count.
TEST(OpsBackward, SameBitsAcrossThreadCounts) {
  const int64_t rows = 300, C = 100, n = int64_t(rows * C);
  const Vf x = randv(size_t(n), 111), dy = randv(size_t(n), 112), g = randv(size_t(C), 113);
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) ids[size_t(i)] = int32_t((i * 7) % 13);
  const AttnCase ac{"threads", 2, 70, 4, 2, 8, true, pad_mask(2, 70, 1, 50)};
  const Vf qkv = randv(size_t(ac.B * ac.T * (ac.Hq + 2 * ac.Hkv) * ac.D), 114),
           R = randv(size_t(ac.B * ac.T * ac.Hq * ac.D), 115);
  auto run = [&] {
    std::vector<Vf> out;
    Vf dx(static_cast<size_t>(n)), dg(size_t(C), 0.0f), db(size_t(C), 0.0f), dg2(size_t(C), 0.0f), dt(size_t(13 * C), 0.0f),
        ds(size_t(n), 0.0f);
    xv::cpu::layernorm_backward(x.data(), g.data(), dy.data(), dx.data(), dg.data(), db.data(), rows, C, 1e-5f);
    xv::cpu::rmsnorm_backward(x.data(), g.data(), dy.data(), nullptr, dg2.data(), rows, C, 1e-5f);
    xv::cpu::scatter_add_rows(dy.data(), C, ids.data(), rows, C, dt.data(), C, nullptr, 0);
    const double loss = xv::cpu::mse_loss(x.data(), dy.data(), ds.data(), n, 0.3f);
    out = {dx, dg, db, dg2, dt, ds, Vf{float(loss), float(loss - double(float(loss)))},
           run_attention_backward(ac, qkv, R, 0.35f)};
    return out;
  };
  const int keep = xv::cpu::num_threads();
  xv::cpu::set_num_threads(1);
  const auto one = run();
  xv::cpu::set_num_threads(3);
  const auto three = run();
  xv::cpu::set_num_threads(keep);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], three[i]) << "output " << i;
}

}  // namespace
