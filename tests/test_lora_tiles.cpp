// The tile logic of the fused LoRA kernels (kernels/cuda/tiles/lora_tiles.h) and of the fused distillation
// loss (kernels/cuda/tiles/loss_tiles.h), run on the CPU in the kernels' schedule — a warp's 32 lanes and their
// butterfly, rank groups of 8, dA columns over the batch in order, the loss's 4096-element blocks of 256
// threads — against the reference ops on the CPU backend (ops::lora_forward, ops::lora_backward,
// ops::distill_loss), with dropout on and off, odd sizes and ranks that do not fill a group. The dropout mask
// is the CPU's own keep function (kernels/cpu), which the CUDA kernels repeat line for line.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/tiles/loss_tiles.h"
#include "kernels/cuda/tiles/lora_tiles.h"
#include "kernels/ops.h"

namespace {

using xv::DType;
using xv::Tensor;
namespace ops = xv::ops;
namespace lt = xv::lora_tiles;

std::vector<float> rnd(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(g);
  return v;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rel, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double mx = 1e-30;
  for (float w : want) mx = std::max(mx, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], rel * mx) << what << " element " << i;
}

// The butterfly of a warp: after xor steps 16, 8, 4, 2, 1 every lane holds the same sum; lane 0's is taken.
float butterfly(std::vector<float> v) {
  for (int o = 16; o > 0; o >>= 1) {
    std::vector<float> n(v);
    for (int l = 0; l < 32; ++l) n[size_t(l)] = v[size_t(l)] + v[size_t(l ^ o)];
    v = n;
  }
  return v[0];
}

struct LoraCase {
  int64_t M, K, N, r;
  float p;
  uint64_t seed;  // 0: no dropout
};
constexpr LoraCase kLora[] = {{5, 37, 11, 3, 0.0f, 0}, {9, 64, 16, 8, 0.1f, 77}, {33, 100, 7, 13, 0.25f, 5},
                              {2, 31, 4, 16, 0.5f, 9}, {17, 70, 20, 1, 0.0f, 0}};

std::string name(const LoraCase& c) {
  return "M=" + std::to_string(c.M) + " K=" + std::to_string(c.K) + " N=" + std::to_string(c.N) +
         " r=" + std::to_string(c.r) + " p=" + std::to_string(c.p);
}

TEST(LoraTiles, DownProjectionLaneByLaneMatchesTheReferenceOp) {
  uint32_t s = 1;
  for (const LoraCase& c : kLora) {
    const std::vector<float> x = rnd(c.M * c.K, s++), A = rnd(c.r * c.K, s++), B = rnd(c.N * c.r, s++);
    const bool drop = c.seed != 0 && c.p > 0.0f;
    const float scale = 1.0f / (1.0f - c.p);
    std::vector<float> xa(size_t(c.M * c.r));
    for (int64_t m = 0; m < c.M; ++m)
      for (int g = 0; g < lt::rank_groups(c.r); ++g) {
        std::vector<std::vector<float>> lanes(lt::kRanks, std::vector<float>(32));
        for (int lane = 0; lane < 32; ++lane) {
          auto xd = [&](int64_t k) {
            const float v = x[size_t(m * c.K + k)];
            return drop ? lt::drop(v, xv::cpu::dropout_keep(c.seed, uint64_t(m * c.K + k), c.p), scale) : v;
          };
          auto a = [&](int64_t j, int64_t k) { return A[size_t(j * c.K + k)]; };
          float acc[lt::kRanks];
          lt::down_lane(xd, a, c.K, c.r, int64_t(g) * lt::kRanks, lane, acc);
          for (int jj = 0; jj < lt::kRanks; ++jj) lanes[size_t(jj)][size_t(lane)] = acc[jj];
        }
        for (int jj = 0; jj < lt::kRanks; ++jj)
          if (g * lt::kRanks + jj < c.r) xa[size_t(m * c.r + g * lt::kRanks + jj)] = butterfly(lanes[size_t(jj)]);
      }
    Tensor y({c.M, c.N}), xa_ref({c.M, c.r});
    ops::lora_forward(Tensor::from_vector({c.M, c.K}, x), Tensor::from_vector({c.r, c.K}, A),
                      Tensor::from_vector({c.N, c.r}, B), 0.5f, c.seed, c.p, y, xa_ref);
    expect_close(xa, xa_ref.to_vector(), 1e-5, name(c) + " xa");
  }
}

TEST(LoraTiles, BackwardColumnsAndElementsMatchTheReferenceOp) {
  uint32_t s = 100;
  for (const LoraCase& c : kLora) {
    if (c.seed == 0) continue;  // without dropout the backward is cuBLASLt's GEMMs
    const std::vector<float> x = rnd(c.M * c.K, s++), A = rnd(c.r * c.K, s++), B = rnd(c.N * c.r, s++),
                             dy = rnd(c.M * c.N, s++), dx0 = rnd(c.M * c.K, s++);
    const float scaling = 0.75f, scale = 1.0f / (1.0f - c.p);
    // dxa = scaling dy B (a cuBLASLt GEMM on the GPU: computed plainly here)
    std::vector<float> dxa(size_t(c.M * c.r), 0.0f);
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t j = 0; j < c.r; ++j) {
        float a = 0.0f;
        for (int64_t n = 0; n < c.N; ++n) a += dy[size_t(m * c.N + n)] * B[size_t(n * c.r + j)];
        dxa[size_t(m * c.r + j)] = scaling * a;
      }
    auto g = [&](int64_t m, int64_t j) { return dxa[size_t(m * c.r + j)]; };
    auto af = [&](int64_t j, int64_t k) { return A[size_t(j * c.K + k)]; };
    auto xd = [&](int64_t m, int64_t k) {
      return lt::drop(x[size_t(m * c.K + k)], xv::cpu::dropout_keep(c.seed, uint64_t(m * c.K + k), c.p), scale);
    };
    std::vector<float> dA(size_t(c.r * c.K), 0.0f), dx = dx0;
    for (int64_t k = 0; k < c.K; ++k)
      for (int gr = 0; gr < lt::rank_groups(c.r); ++gr) {
        float acc[lt::kRanks];
        lt::da_column(g, xd, c.M, c.r, int64_t(gr) * lt::kRanks, k, acc);
        for (int jj = 0; jj < lt::kRanks; ++jj)
          if (gr * lt::kRanks + jj < c.r) dA[size_t((gr * lt::kRanks + jj) * c.K + k)] += acc[jj];
      }
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t k = 0; k < c.K; ++k)
        dx[size_t(m * c.K + k)] +=
            lt::dx_elem(g, af, c.r, m, k, xv::cpu::dropout_keep(c.seed, uint64_t(m * c.K + k), c.p), scale);

    const Tensor xt = Tensor::from_vector({c.M, c.K}, x), At = Tensor::from_vector({c.r, c.K}, A),
                 Bt = Tensor::from_vector({c.N, c.r}, B);
    Tensor y({c.M, c.N}), xa({c.M, c.r}), dAt({c.r, c.K}), dBt({c.N, c.r});
    Tensor dxt = Tensor::from_vector({c.M, c.K}, dx0);
    ops::lora_forward(xt, At, Bt, scaling, c.seed, c.p, y, xa);
    ops::lora_backward(xt, At, Bt, xa, scaling, c.seed, c.p, Tensor::from_vector({c.M, c.N}, dy), dxt, dAt, dBt);
    expect_close(dA, dAt.to_vector(), 1e-5, name(c) + " dA");
    expect_close(dx, dxt.to_vector(), 1e-5, name(c) + " dx");
  }
}

TEST(LossTiles, BlocksOfThreadsMatchTheReferenceOp) {
  for (int64_t n : {int64_t(1), int64_t(255), int64_t(4096), int64_t(4097), int64_t(10000)}) {
    const std::vector<float> se = rnd(n, 7), sx = rnd(n, 8), t = rnd(n, 9), d0 = rnd(n, 10);
    const float weight = 0.125f, gscale = xv::loss_tiles::grad_scale(weight, n);
    std::vector<float> de = d0, dx = d0;
    double en = 0.0, xx = 0.0;
    for (int64_t b = 0; b < xv::loss_tiles::blocks(n); ++b) {
      double be = 0.0, bx = 0.0;  // the block's tree, in thread order here (f64: the order moves ~1e-16)
      for (int th = 0; th < xv::loss_tiles::kThreads; ++th) {
        double pe = 0.0, px = 0.0;
        auto load = [&](int64_t i, float* a, float* b2, float* c) { *a = se[size_t(i)], *b2 = sx[size_t(i)], *c = t[size_t(i)]; };
        auto grad = [&](int64_t i, float ge, float gx) { de[size_t(i)] += ge, dx[size_t(i)] += gx; };
        xv::loss_tiles::thread_partials(load, n, b, th, gscale, &pe, &px, grad);
        be += pe, bx += px;
      }
      en += be, xx += bx;
    }
    en /= double(n), xx /= double(n);
    Tensor dse = Tensor::from_vector({n, 1}, d0), dsx = Tensor::from_vector({n, 1}, d0);
    const ops::DistillTerms ref = ops::distill_loss(Tensor::from_vector({n, 1}, se), Tensor::from_vector({n, 1}, sx),
                                                    Tensor::from_vector({n, 1}, t), weight, dse, dsx);
    EXPECT_NEAR(en, ref.en, 1e-12 * ref.en) << "n " << n;
    EXPECT_NEAR(xx, ref.xx, 1e-12 * ref.xx) << "n " << n;
    // The gradient is elementwise: the same f32 operations (up to a contracted multiply-add).
    expect_close(de, dse.to_vector(), 1e-6, "ds_en n " + std::to_string(n));
    expect_close(dx, dsx.to_vector(), 1e-6, "ds_xx n " + std::to_string(n));
  }
}

}  // namespace
