// The tile logic of the flash attention kernels (kernels/cuda/tiles/flash_tiles.h), run on the CPU block by
// block in the kernels' order — query tiles, key tiles, the online softmax, the log-sum-exp, the backward's
// recomputation from it, the dK/dV blocks looping over the group's query heads and the causal tile ranges —
// against the reference op (ops::attention and ops::attention_backward on the CPU backend): odd sizes, every
// mask, GQA, causal, fully masked rows. The MMA fragment layouts are checked for the properties the kernels
// rely on. What this cannot check is the warp-level layer (fragments in registers, shuffles, shared memory):
// tests/test_backend_ops.cpp does on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/cuda/tiles/flash_tiles.h"
#include "kernels/ops.h"

namespace {

using xv::DType;
using xv::Tensor;
namespace ops = xv::ops;
namespace flash = xv::flash;

struct Case {
  int64_t B, T, Hq, Hkv, D;
  int mask;  // 0 none; 1 padding at the end (batch b: 2b + 3 keys); 2 the last batch fully masked; 3 the first
             // three keys of every batch (causal: rows 0..2 see no key)
  bool causal;
};

struct Problem {
  Case c;
  std::vector<float> q, k, v, mask, dout;  // row-major (B*T, H*D); mask (B, T)
  float scale = 1.0f;
  int64_t group() const { return c.Hq / c.Hkv; }
  const float* mask_row(int64_t b) const { return c.mask ? mask.data() + b * c.T : nullptr; }
  float qv(int64_t b, int64_t i, int64_t h, int64_t d) const { return q[size_t((b * c.T + i) * c.Hq * c.D + h * c.D + d)]; }
  float kv(const std::vector<float>& x, int64_t b, int64_t j, int64_t hk, int64_t d) const {
    return x[size_t((b * c.T + j) * c.Hkv * c.D + hk * c.D + d)];
  }
};

Problem make(const Case& c, uint32_t seed) {
  Problem p;
  p.c = c;
  p.scale = 1.0f / std::sqrt(float(c.D));
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  auto fill = [&](std::vector<float>& x, int64_t n) {
    x.resize(size_t(n));
    for (float& e : x) e = u(g);
  };
  fill(p.q, c.B * c.T * c.Hq * c.D);
  fill(p.k, c.B * c.T * c.Hkv * c.D);
  fill(p.v, c.B * c.T * c.Hkv * c.D);
  fill(p.dout, c.B * c.T * c.Hq * c.D);
  p.mask.assign(size_t(c.B * c.T), 1.0f);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t t = 0; t < c.T; ++t) {
      float& m = p.mask[size_t(b * c.T + t)];
      if (c.mask == 1 && t >= c.T - std::min(c.T - 1, 2 * b + 3)) m = 0.0f;
      if (c.mask == 2 && b == c.B - 1) m = 0.0f;
      if (c.mask == 3 && t < 3) m = 0.0f;
    }
  return p;
}

float dot_qk(const Problem& p, const std::vector<float>& x, int64_t b, int64_t i, int64_t h, int64_t j) {
  const int64_t hk = h / p.group();
  float s = 0.0f;
  for (int64_t d = 0; d < p.c.D; ++d) s += p.qv(b, i, h, d) * p.kv(x, b, j, hk, d);
  return s;
}

struct Fwd {
  std::vector<float> o, lse;  // o (B*T, Hq*D), lse (B*Hq, T)
};

// The forward kernel's schedule: a block per (query tile, b, h); rows in the tile; key tiles in order.
Fwd tiled_forward(const Problem& p) {
  const Case& c = p.c;
  Fwd f;
  f.o.assign(size_t(c.B * c.T * c.Hq * c.D), 0.0f);
  f.lse.assign(size_t(c.B * c.Hq * c.T), 0.0f);
  const int64_t qtiles = flash::ceil_div(c.T, flash::kFwdBr);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t qt = 0; qt < qtiles; ++qt) {
        const int64_t q0 = qt * flash::kFwdBr, hk = h / p.group();
        const int64_t tiles = flash::key_tiles(q0, flash::kFwdBr, flash::kBc, c.T, c.causal);
        for (int64_t i = q0; i < q0 + flash::kFwdBr; ++i) {
          flash::RowState st = flash::row_start();
          std::vector<float> acc(size_t(c.D), 0.0f), s(size_t(flash::kBc));
          for (int64_t jt = 0; jt < tiles; ++jt) {
            const int64_t k0 = jt * flash::kBc;
            float tmax = -INFINITY;
            for (int64_t jj = 0; jj < flash::kBc; ++jj) {
              const int64_t j = k0 + jj;
              const bool vis = flash::visible(i, j, c.T, c.causal, p.mask_row(b));
              s[size_t(jj)] = flash::masked_score(vis ? dot_qk(p, p.k, b, i, h, j) : 0.0f, p.scale, vis);
              tmax = std::max(tmax, s[size_t(jj)]);
            }
            const float m_new = flash::max_after(st.m, tmax), base = flash::exp_base(m_new);
            float tsum = 0.0f;
            for (float& x : s) tsum += (x = flash::prob(x, base));
            const float alpha = flash::rescale(st.m, m_new);
            st = flash::row_after(st, m_new, tsum);
            for (int64_t d = 0; d < c.D; ++d) {
              float a = acc[size_t(d)] * alpha;
              for (int64_t jj = 0; jj < flash::kBc; ++jj)
                if (k0 + jj < c.T) a += s[size_t(jj)] * p.kv(p.v, b, k0 + jj, hk, d);
              acc[size_t(d)] = a;
            }
          }
          if (i >= c.T) continue;
          const float f_out = flash::out_scale(st);
          for (int64_t d = 0; d < c.D; ++d) f.o[size_t((b * c.T + i) * c.Hq * c.D + h * c.D + d)] = acc[size_t(d)] * f_out;
          f.lse[size_t((b * c.Hq + h) * c.T + i)] = flash::row_lse(st);
        }
      }
  return f;
}

struct Bwd {
  std::vector<float> dq, dk, dv;
};

// The backward kernels' schedules from the forward's lse and o: delta per row; dK/dV blocks per (key tile, b,
// kv head) over the group's heads and their query tiles from first_query_tile; dQ blocks per (query tile, b,
// h) over key_tiles.
Bwd tiled_backward(const Problem& p, const Fwd& f) {
  const Case& c = p.c;
  const int64_t HD = c.Hq * c.D, KD = c.Hkv * c.D;
  std::vector<float> delta(size_t(c.B * c.Hq * c.T), 0.0f);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.T; ++i) {
        float a = 0.0f;
        for (int64_t d = 0; d < c.D; ++d)
          a += p.dout[size_t((b * c.T + i) * HD + h * c.D + d)] * f.o[size_t((b * c.T + i) * HD + h * c.D + d)];
        delta[size_t((b * c.Hq + h) * c.T + i)] = a;
      }
  auto dp_of = [&](int64_t b, int64_t i, int64_t h, int64_t j) {
    float a = 0.0f;
    for (int64_t d = 0; d < c.D; ++d)
      a += p.dout[size_t((b * c.T + i) * HD + h * c.D + d)] * p.kv(p.v, b, j, h / p.group(), d);
    return a;
  };
  auto ds_of = [&](int64_t b, int64_t i, int64_t h, int64_t j, float* prob) {
    const bool vis = flash::visible(i, j, c.T, c.causal, p.mask_row(b));
    const float s = flash::masked_score(vis ? dot_qk(p, p.k, b, i, h, j) : 0.0f, p.scale, vis);
    const float lse = i < c.T ? f.lse[size_t((b * c.Hq + h) * c.T + i)] : -INFINITY;
    const float pr = flash::prob_from_lse(s, lse);
    *prob = pr;
    const float dl = i < c.T ? delta[size_t((b * c.Hq + h) * c.T + i)] : 0.0f;
    return flash::dscore(pr, i < c.T && j < c.T ? dp_of(b, i, h, j) : 0.0f, dl);
  };
  Bwd g;
  g.dq.assign(size_t(c.B * c.T * HD), 0.0f);
  g.dk.assign(size_t(c.B * c.T * KD), 0.0f);
  g.dv.assign(size_t(c.B * c.T * KD), 0.0f);
  const int64_t ktiles = flash::ceil_div(c.T, flash::kBc), qtiles_b = flash::ceil_div(c.T, flash::kBwdBr);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t hk = 0; hk < c.Hkv; ++hk)
      for (int64_t kt = 0; kt < ktiles; ++kt) {
        const int64_t k0 = kt * flash::kBc;
        for (int64_t h = hk * p.group(); h < (hk + 1) * p.group(); ++h)
          for (int64_t qt = flash::first_query_tile(k0, flash::kBwdBr, c.causal); qt < qtiles_b; ++qt)
            for (int64_t i = qt * flash::kBwdBr; i < (qt + 1) * flash::kBwdBr; ++i)
              for (int64_t j = k0; j < std::min(c.T, k0 + flash::kBc); ++j) {
                float pr = 0.0f;
                const float ds = ds_of(b, i, h, j, &pr);
                if (i >= c.T) continue;
                for (int64_t d = 0; d < c.D; ++d) {
                  g.dv[size_t((b * c.T + j) * KD + hk * c.D + d)] += pr * p.dout[size_t((b * c.T + i) * HD + h * c.D + d)];
                  g.dk[size_t((b * c.T + j) * KD + hk * c.D + d)] += ds * p.qv(b, i, h, d);
                }
              }
      }
  for (float& x : g.dk) x *= p.scale;
  const int64_t qtiles = flash::ceil_div(c.T, flash::kDqBr);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t qt = 0; qt < qtiles; ++qt) {
        const int64_t q0 = qt * flash::kDqBr;
        const int64_t tiles = flash::key_tiles(q0, flash::kDqBr, flash::kBc, c.T, c.causal);
        for (int64_t i = q0; i < std::min(c.T, q0 + flash::kDqBr); ++i)
          for (int64_t j = 0; j < tiles * flash::kBc; ++j) {
            if (j >= c.T) continue;  // the kernel's zero rows past T: their score is hidden
            float pr = 0.0f;
            const float ds = ds_of(b, i, h, j, &pr);
            for (int64_t d = 0; d < c.D; ++d)
              g.dq[size_t((b * c.T + i) * HD + h * c.D + d)] += p.scale * ds * p.kv(p.k, b, j, h / p.group(), d);
          }
      }
  return g;
}

Tensor t2(const std::vector<float>& v, int64_t rows, int64_t cols) { return Tensor::from_vector({rows, cols}, v); }

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double mx = 1.0;
  for (float w : want) mx = std::max(mx, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-4 * std::fabs(want[i]) + 2e-5 * mx) << what << " element " << i;
}

constexpr Case kCases[] = {
    {2, 5, 4, 2, 32, 1, false}, {2, 5, 4, 2, 32, 1, true},  {1, 63, 2, 2, 64, 0, true},
    {1, 64, 2, 1, 64, 3, true}, {2, 65, 4, 2, 32, 2, false}, {1, 130, 2, 1, 96, 1, true},
    {1, 97, 3, 3, 128, 3, false}, {1, 1, 2, 1, 32, 0, true}, {1, 129, 4, 1, 32, 3, true},
};

std::string name(const Case& c) {
  return "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " Hq=" + std::to_string(c.Hq) +
         " Hkv=" + std::to_string(c.Hkv) + " D=" + std::to_string(c.D) + " mask=" + std::to_string(c.mask) +
         (c.causal ? " causal" : "");
}

ops::AttentionParams params(const Problem& p, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& m,
                            const Tensor& o) {
  ops::AttentionParams a;
  a.q = q, a.k = k, a.v = v, a.o = o;
  a.B = p.c.B, a.T = p.c.T, a.Hq = p.c.Hq, a.Hkv = p.c.Hkv, a.D = p.c.D, a.causal = p.c.causal, a.scale = p.scale;
  if (p.c.mask) a.key_mask = m;
  return a;
}

TEST(FlashTiles, ForwardBlockByBlockMatchesTheReferenceOp) {
  uint32_t seed = 1;
  for (const Case& c : kCases) {
    const Problem p = make(c, seed++);
    const int64_t R = c.B * c.T;
    const Tensor q = t2(p.q, R, c.Hq * c.D), k = t2(p.k, R, c.Hkv * c.D), v = t2(p.v, R, c.Hkv * c.D);
    const Tensor m = t2(p.mask, c.B, c.T);
    Tensor o({R, c.Hq * c.D}), lse({c.B * c.Hq, c.T});
    ops::AttentionParams a = params(p, q, k, v, m, o);
    a.lse = lse;
    ops::attention(a);
    const Fwd f = tiled_forward(p);
    expect_close(f.o, o.to_vector(), name(c) + " o");
    const std::vector<float> want_lse = lse.to_vector();
    for (size_t i = 0; i < want_lse.size(); ++i) {
      if (std::isinf(want_lse[i])) {
        ASSERT_TRUE(std::isinf(f.lse[i]) && f.lse[i] < 0) << name(c) << " lse " << i << ": a row with no key";
        continue;
      }
      ASSERT_NEAR(f.lse[i], want_lse[i], 1e-5 * std::max(1.0f, std::fabs(want_lse[i]))) << name(c) << " lse " << i;
    }
  }
}

// The reference op's lse is log sum exp of the scaled visible scores, computed here in double.
TEST(FlashTiles, TheReferenceLseIsTheLogSumExp) {
  const Case c{2, 70, 2, 1, 32, 3, true};
  const Problem p = make(c, 99);
  const int64_t R = c.B * c.T;
  Tensor o({R, c.Hq * c.D}), lse({c.B * c.Hq, c.T});
  const Tensor q = t2(p.q, R, c.Hq * c.D), k = t2(p.k, R, c.Hkv * c.D), v = t2(p.v, R, c.Hkv * c.D),
               m = t2(p.mask, c.B, c.T);
  ops::AttentionParams a = params(p, q, k, v, m, o);
  a.lse = lse;
  ops::attention(a);
  const std::vector<float> got = lse.to_vector();
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.T; ++i) {
        double z = 0.0;
        bool any = false;
        for (int64_t j = 0; j < c.T; ++j)
          if (flash::visible(i, j, c.T, c.causal, p.mask_row(b)))
            z += std::exp(double(dot_qk(p, p.k, b, i, h, j)) * p.scale), any = true;
        const float g = got[size_t((b * c.Hq + h) * c.T + i)];
        if (!any) {
          EXPECT_TRUE(std::isinf(g) && g < 0) << "row " << i;
        } else {
          EXPECT_NEAR(g, std::log(z), 1e-5 * std::max(1.0, std::fabs(std::log(z)))) << "b " << b << " h " << h << " i " << i;
        }
      }
}

TEST(FlashTiles, BackwardBlockByBlockMatchesTheReferenceOp) {
  uint32_t seed = 100;
  for (const Case& c : kCases) {
    const Problem p = make(c, seed++);
    const int64_t R = c.B * c.T;
    const Tensor q = t2(p.q, R, c.Hq * c.D), k = t2(p.k, R, c.Hkv * c.D), v = t2(p.v, R, c.Hkv * c.D);
    const Tensor m = t2(p.mask, c.B, c.T), dout = t2(p.dout, R, c.Hq * c.D);
    Tensor dq({R, c.Hq * c.D}), dk({R, c.Hkv * c.D}), dv({R, c.Hkv * c.D}), o({R, c.Hq * c.D});
    ops::AttentionBackwardParams a;
    a.fwd = params(p, q, k, v, m, o);
    a.dout = dout, a.dq = dq, a.dk = dk, a.dv = dv;
    ops::attention_backward(a);
    const Bwd g = tiled_backward(p, tiled_forward(p));
    expect_close(g.dq, dq.to_vector(), name(c) + " dq");
    expect_close(g.dk, dk.to_vector(), name(c) + " dk");
    expect_close(g.dv, dv.to_vector(), name(c) + " dv");
  }
}

// Causal tile ranges: a key tile holds a key some row of the query tile sees exactly when the kernels visit it.
TEST(FlashTiles, CausalTileRangesVisitEveryVisiblePairAndNoEmptyTile) {
  for (int64_t T : {1, 5, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200}) {
    for (int64_t q0 = 0; q0 < T; q0 += flash::kFwdBr) {
      const int64_t tiles = flash::key_tiles(q0, flash::kFwdBr, flash::kBc, T, true);
      for (int64_t jt = 0; jt * flash::kBc < T; ++jt) {
        bool any = false;
        for (int64_t i = q0; i < std::min(T, q0 + flash::kFwdBr); ++i)
          for (int64_t j = jt * flash::kBc; j < std::min(T, (jt + 1) * flash::kBc); ++j)
            any = any || flash::visible(i, j, T, true, nullptr);
        EXPECT_EQ(any, jt < tiles) << "T " << T << " q0 " << q0 << " key tile " << jt;
      }
    }
    for (int64_t k0 = 0; k0 < T; k0 += flash::kBc) {
      const int64_t first = flash::first_query_tile(k0, flash::kBwdBr, true);
      for (int64_t qt = 0; qt * flash::kBwdBr < T; ++qt) {
        bool any = false;
        for (int64_t i = qt * flash::kBwdBr; i < std::min(T, (qt + 1) * flash::kBwdBr); ++i)
          for (int64_t j = k0; j < std::min(T, k0 + flash::kBc); ++j) any = any || flash::visible(i, j, T, true, nullptr);
        if (qt < first) {
          EXPECT_FALSE(any) << "T " << T << " k0 " << k0 << " skipped query tile " << qt;
        }
      }
    }
  }
}

// The online softmax's bookkeeping on a row revealed tile by tile equals the one-pass softmax, whatever the
// order of maxima (growing, shrinking, tiles with no visible key before, between and after).
TEST(FlashTiles, OnlineSoftmaxEqualsOnePass) {
  const std::vector<std::vector<float>> tiles = {
      {-INFINITY, -INFINITY}, {1.0f, -3.0f}, {-INFINITY, -INFINITY}, {7.5f, 2.0f}, {-20.0f, 6.0f}, {-INFINITY, 0.5f}};
  flash::RowState st = flash::row_start();
  std::vector<float> acc_w(tiles.size() * 2, 0.0f);  // the weight of each score as the accumulator holds it
  for (size_t t = 0; t < tiles.size(); ++t) {
    float tmax = -INFINITY;
    for (float s : tiles[t]) tmax = std::max(tmax, s);
    const float m_new = flash::max_after(st.m, tmax), base = flash::exp_base(m_new);
    const float alpha = flash::rescale(st.m, m_new);
    float sum = 0.0f;
    for (float& w : acc_w) w *= alpha;
    for (size_t j = 0; j < 2; ++j) sum += (acc_w[t * 2 + j] = flash::prob(tiles[t][j], base));
    st = flash::row_after(st, m_new, sum);
  }
  double z = 0.0;
  for (const auto& t : tiles)
    for (float s : t) z += std::exp(double(s) - 7.5);
  for (size_t t = 0; t < tiles.size(); ++t)
    for (size_t j = 0; j < 2; ++j) {
      const double want = std::exp(double(tiles[t][j]) - 7.5) / z;
      EXPECT_NEAR(acc_w[t * 2 + j] * flash::out_scale(st), want, 1e-6) << "tile " << t << " key " << j;
    }
  EXPECT_NEAR(flash::row_lse(st), 7.5 + std::log(z), 1e-5);
  const flash::RowState none = flash::row_after(flash::row_start(), -INFINITY, 0.0f);
  EXPECT_EQ(flash::out_scale(none), 0.0f);
  EXPECT_TRUE(std::isinf(flash::row_lse(none)));
  EXPECT_EQ(flash::prob_from_lse(1.0f, -INFINITY), 0.0f);
  EXPECT_EQ(flash::prob_from_lse(-INFINITY, 2.0f), 0.0f);
}

// The m16n8k16 fragments: each layout covers its matrix once; the element pairs the kernels load with one
// 32-bit access are adjacent in memory; an accumulator tile pair is exactly the A operand of the next product.
TEST(FlashTiles, MmaFragmentLayouts) {
  std::set<std::pair<int, int>> a, b, c;
  for (int lane = 0; lane < 32; ++lane) {
    for (int r = 0; r < 4; ++r)
      for (int e = 0; e < 2; ++e) {
        const flash::RC x = flash::frag_a(lane, r, e);
        ASSERT_TRUE(x.row >= 0 && x.row < 16 && x.col >= 0 && x.col < 16);
        a.insert({x.row, x.col});
      }
    for (int r = 0; r < 4; ++r) {  // pairs: the same row, adjacent columns, the low one even
      const flash::RC x0 = flash::frag_a(lane, r, 0), x1 = flash::frag_a(lane, r, 1);
      EXPECT_EQ(x0.row, x1.row);
      EXPECT_EQ(x1.col, x0.col + 1);
      EXPECT_EQ(x0.col % 2, 0);
    }
    for (int r = 0; r < 2; ++r) {
      const flash::RC k0 = flash::frag_b(lane, r, 0), k1 = flash::frag_b(lane, r, 1);
      EXPECT_EQ(k0.col, k1.col);
      EXPECT_EQ(k1.row, k0.row + 1);
      for (int e = 0; e < 2; ++e) {
        const flash::RC x = flash::frag_b(lane, r, e);
        ASSERT_TRUE(x.row >= 0 && x.row < 16 && x.col >= 0 && x.col < 8);
        b.insert({x.row, x.col});
      }
    }
    for (int i = 0; i < 4; ++i) {
      const flash::RC x = flash::frag_c(lane, i);
      ASSERT_TRUE(x.row >= 0 && x.row < 16 && x.col >= 0 && x.col < 8);
      c.insert({x.row, x.col});
    }
    for (int kk = 0; kk < 4; ++kk)
      for (int r = 0; r < 4; ++r)
        for (int e = 0; e < 2; ++e) {
          const flash::RC want = flash::frag_a(lane, r, e);
          const flash::TileIdx ti = flash::a_from_c(kk, r, e);
          const flash::RC got = flash::frag_c(lane, ti.i);
          EXPECT_EQ(got.row, want.row) << "lane " << lane << " kk " << kk << " reg " << r;
          EXPECT_EQ(ti.tile * 8 + got.col, kk * 16 + want.col) << "lane " << lane << " kk " << kk << " reg " << r;
        }
  }
  EXPECT_EQ(a.size(), 256u);
  EXPECT_EQ(b.size(), 128u);
  EXPECT_EQ(c.size(), 128u);
}

}  // namespace
