// The CPU op set against plain double-precision formulas written here (independent of kernels/cpu).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace {

std::vector<float> randv(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// softmax(q k^T * scale + mask) v in double, one (b, h, i) row at a time.
std::vector<double> attention_ref(const xv::cpu::AttentionArgs& p) {
  std::vector<double> o(size_t(p.B * p.T * p.Hq * p.D), 0.0);
  const int64_t group = p.Hq / p.Hkv;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.Hq; ++h)
      for (int64_t i = 0; i < p.T; ++i) {
        std::vector<double> s(size_t(p.T), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j < p.T; ++j) {
          if (p.causal && j > i) continue;
          if (p.key_mask && p.key_mask[b * p.T + j] == 0.0f) continue;
          double acc = 0;
          for (int64_t d = 0; d < p.D; ++d)
            acc += double(p.q[(b * p.T + i) * p.q_stride + h * p.D + d]) *
                   p.k[(b * p.T + j) * p.k_stride + (h / group) * p.D + d];
          s[size_t(j)] = acc * p.scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        if (mx == -INFINITY) continue;
        double z = 0;
        for (auto& v : s) z += (v = std::exp(v - mx));
        for (int64_t j = 0; j < p.T; ++j)
          for (int64_t d = 0; d < p.D; ++d)
            o[size_t(((b * p.T + i) * p.Hq + h) * p.D + d)] +=
                s[size_t(j)] / z * p.v[(b * p.T + j) * p.v_stride + (h / group) * p.D + d];
      }
  return o;
}

TEST(Ops, AttentionCausalMaskedGrouped) {
  const int64_t B = 2, T = 9, Hq = 4, Hkv = 2, D = 8, QKV = (Hq + 2 * Hkv) * D;
  auto qkv = randv(size_t(B * T * QKV), 1);
  std::vector<float> mask(size_t(B * T), 1.0f), out(size_t(B * T * Hq * D), -7.0f);
  for (int64_t t = 6; t < T; ++t) mask[size_t(T + t)] = 0.0f;  // row 1 right-padded after 6 tokens
  for (bool causal : {false, true}) {
    xv::cpu::AttentionArgs p;
    p.q = qkv.data(), p.k = qkv.data() + Hq * D, p.v = qkv.data() + (Hq + Hkv) * D, p.o = out.data();
    p.q_stride = p.k_stride = p.v_stride = QKV, p.o_stride = Hq * D;
    p.B = B, p.T = T, p.Hq = Hq, p.Hkv = Hkv, p.D = D, p.key_mask = mask.data(), p.causal = causal;
    p.scale = 1.0f / std::sqrt(float(D));
    xv::cpu::attention(p);
    auto ref = attention_ref(p);
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5) << "causal " << causal << " at " << i;
  }
}

TEST(Ops, AttentionAllKeysMaskedGivesZeros) {
  const int64_t T = 3, D = 4;
  auto qkv = randv(size_t(T * 3 * D), 2);
  std::vector<float> mask(size_t(T), 0.0f), out(size_t(T * D), 5.0f);
  xv::cpu::AttentionArgs p;
  p.q = qkv.data(), p.k = qkv.data() + D, p.v = qkv.data() + 2 * D, p.o = out.data();
  p.q_stride = p.k_stride = p.v_stride = 3 * D, p.o_stride = D;
  p.B = 1, p.T = T, p.Hq = 1, p.Hkv = 1, p.D = D, p.key_mask = mask.data(), p.scale = 0.5f;
  xv::cpu::attention(p);
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

TEST(Ops, LinearAndGemmTransposes) {
  const int64_t M = 5, K = 7, N = 3;
  auto x = randv(size_t(M * K), 3), w = randv(size_t(N * K), 4), b = randv(size_t(N), 5);
  std::vector<float> y(size_t(M * N));
  xv::cpu::linear(x.data(), K, w.data(), b.data(), y.data(), N, M, K, N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = b[size_t(j)];
      for (int64_t k = 0; k < K; ++k) acc += double(x[size_t(i * K + k)]) * w[size_t(j * K + k)];
      EXPECT_NEAR(y[size_t(i * N + j)], acc, 1e-5);
    }
  // C (K, N) = x^T (K, M) @ y (M, N) with trans_a.
  std::vector<float> c(size_t(K * N));
  xv::cpu::gemm(true, false, K, N, M, 1.0f, x.data(), K, y.data(), N, 0.0f, c.data(), N);
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t m = 0; m < M; ++m) acc += double(x[size_t(m * K + i)]) * y[size_t(m * N + j)];
      EXPECT_NEAR(c[size_t(i * N + j)], acc, 1e-4);
    }
}

TEST(Ops, NormsAndActivations) {
  const int64_t R = 3, C = 50;
  auto x = randv(size_t(R * C), 6, 3.0f), g = randv(size_t(C), 7), b = randv(size_t(C), 8);
  std::vector<float> ln(x.size()), rms(x.size());
  xv::cpu::layernorm(x.data(), g.data(), b.data(), ln.data(), R, C, 1e-5f);
  xv::cpu::rmsnorm(x.data(), g.data(), rms.data(), R, C, 1e-5f);
  for (int64_t r = 0; r < R; ++r) {
    double mean = 0, var = 0, ss = 0;
    for (int64_t c = 0; c < C; ++c) mean += x[size_t(r * C + c)] / double(C);
    for (int64_t c = 0; c < C; ++c) {
      const double d = x[size_t(r * C + c)] - mean;
      var += d * d / double(C);
      ss += double(x[size_t(r * C + c)]) * x[size_t(r * C + c)] / double(C);
    }
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = size_t(r * C + c);
      EXPECT_NEAR(ln[i], (x[i] - mean) / std::sqrt(var + 1e-5) * g[size_t(c)] + b[size_t(c)], 1e-5);
      EXPECT_NEAR(rms[i], x[i] / std::sqrt(ss + 1e-5) * g[size_t(c)], 1e-5);
    }
  }
  std::vector<float> v = {-3.0f, -1.0f, -0.1f, 0.0f, 0.5f, 2.0f}, a = v, t = v, q = v, s = v;
  xv::cpu::gelu_erf(a.data(), 6);
  xv::cpu::gelu_tanh(t.data(), 6);
  xv::cpu::quick_gelu(q.data(), 6);
  xv::cpu::silu(s.data(), 6);
  for (size_t i = 0; i < v.size(); ++i) {
    const double z = v[i];
    EXPECT_NEAR(a[i], 0.5 * z * (1 + std::erf(z / std::sqrt(2.0))), 1e-6);
    EXPECT_NEAR(t[i], 0.5 * z * (1 + std::tanh(std::sqrt(2 / M_PI) * (z + 0.044715 * z * z * z))), 1e-6);
    EXPECT_NEAR(q[i], z / (1 + std::exp(-1.702 * z)), 1e-6);
    EXPECT_NEAR(s[i], z / (1 + std::exp(-z)), 1e-6);
  }
  // SwiGLU over [gate | up].
  std::vector<float> gu = {1.0f, -2.0f, 3.0f, 4.0f}, o(2);
  xv::cpu::swiglu(gu.data(), o.data(), 1, 2);
  EXPECT_NEAR(o[0], 3.0 * (1.0 / (1 + std::exp(-1.0))), 1e-6);
  EXPECT_NEAR(o[1], 4.0 * (-2.0 / (1 + std::exp(2.0))), 1e-6);
}

TEST(Ops, RopeRotatesHalves) {
  // One head of dim 4 at position 3, base 100, ext factors {1, 2}, mscale 1.5.
  const float ext[2] = {1.0f, 2.0f};
  std::vector<float> cos(4 * 4), sin(4 * 4);
  xv::cpu::rope_tables(4, 4, 100.0, ext, 1.5f, cos.data(), sin.data());
  const double f0 = 1.0, f1 = 1.0 / (2.0 * 10.0);  // 1 / (ext_i * 100^(2i/4))
  std::vector<float> x = {1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 0.5f, -1.0f, 2.0f, 0.25f};  // (T=4, D=4)
  xv::cpu::rope(x.data(), 1, 4, 1, 4, 4, 4, cos.data(), sin.data());
  const double a0 = 3 * f0, a1 = 3 * f1;
  const double x1[2] = {0.5, -1.0}, x2[2] = {2.0, 0.25};
  const double c[2] = {1.5 * std::cos(a0), 1.5 * std::cos(a1)}, s[2] = {1.5 * std::sin(a0), 1.5 * std::sin(a1)};
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(x[12 + i], x1[i] * c[i] - x2[i] * s[i], 1e-5);
    EXPECT_NEAR(x[14 + i], x2[i] * c[i] + x1[i] * s[i], 1e-5);
  }
  EXPECT_NEAR(x[0], 1.5, 1e-6);  // position 0: cos = mscale, sin = 0
}

TEST(Ops, L2NormalizeAndEmbedding) {
  std::vector<float> x = {3, 4, 0, 0};
  xv::cpu::l2_normalize(x.data(), 2, 2);
  EXPECT_FLOAT_EQ(x[0], 0.6f);
  EXPECT_FLOAT_EQ(x[1], 0.8f);
  EXPECT_EQ(x[2], 0.0f);
  std::vector<float> table = {0, 1, 10, 11, 20, 21}, out(4);
  std::vector<int32_t> ids = {2, 0};
  xv::cpu::gather_rows(table.data(), 2, nullptr, 0, ids.data(), 2, 2, out.data(), 2);
  EXPECT_EQ(out, (std::vector<float>{20, 21, 0, 1}));
}

}  // namespace

#include "kernels/cpu/vec_math.h"

namespace {

TEST(VecMath, ExpAndErfAgainstLibm) {
  double worst_exp = 0, worst_erf = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.001953125f) {
    const double want = std::exp(double(x));
    worst_exp = std::max(worst_exp, std::fabs(xv::cpu::vec::exp(x) - want) / want);
  }
  for (float x = -6.0f; x <= 6.0f; x += 0.0001220703125f)
    worst_erf = std::max(worst_erf, std::fabs(double(xv::cpu::vec::erf(x)) - std::erf(double(x))));
  EXPECT_LT(worst_exp, 2.5e-7);  // about 2 ulp
  EXPECT_LT(worst_erf, 2.5e-7);
  EXPECT_EQ(xv::cpu::vec::exp(-INFINITY), 0.0f);
  EXPECT_EQ(xv::cpu::vec::erf(0.0f), 0.0f);
  EXPECT_TRUE(std::isnan(xv::cpu::vec::exp(NAN)));
  EXPECT_TRUE(std::isinf(xv::cpu::vec::exp(89.0f)) || xv::cpu::vec::exp(89.0f) > 3.4e38f);
  std::printf("vec::exp max relative error %.3g, vec::erf max absolute error %.3g\n", worst_exp, worst_erf);
}

}  // namespace
