// Each CUDA kernel against its CPU reference (kernels/ops.h), with a stated tolerance. Runs where a GPU
// is present; prints that it was skipped otherwise. Compiled only when nvcc was found.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"

namespace {

std::vector<float> randv(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

struct Dev {
  float* p = nullptr;
  explicit Dev(const std::vector<float>& h) {
    cudaCheck(cudaMalloc(&p, h.size() * 4));
    cudaCheck(cudaMemcpy(p, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  }
  ~Dev() { cudaFree(p); }
  std::vector<float> get(size_t n) const {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), p, n * 4, cudaMemcpyDeviceToHost));
    return h;
  }
};

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol * (1.0f + std::fabs(b[i]))) << "at " << i;
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (xv::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device: CUDA kernel tests skipped";
  }
};

constexpr int64_t R = 37, C = 3072;
constexpr float kTol = 1e-5f;  // f32 on both sides; only the reduction order differs

TEST_F(CudaOps, RmsNorm) {
  auto x = randv(R * C, 1), g = randv(C, 2);
  std::vector<float> y(x.size(), 0.0f);
  xv::ops::rmsnorm(x.data(), g.data(), y.data(), R, C, 1e-5f);
  Dev dx(x), dg(g), dy(y);
  xv::cuda::rmsnorm(dx.p, dg.p, dy.p, R, C, 1e-5f);
  expect_close(dy.get(y.size()), y, kTol);
}

TEST_F(CudaOps, LayerNorm) {
  auto x = randv(R * C, 3), g = randv(C, 4), b = randv(C, 5);
  std::vector<float> y(x.size(), 0.0f);
  xv::ops::layernorm(x.data(), g.data(), b.data(), y.data(), R, C, 1e-5f);
  Dev dx(x), dg(g), db(b), dy(y);
  xv::cuda::layernorm(dx.p, dg.p, db.p, dy.p, R, C, 1e-5f);
  expect_close(dy.get(y.size()), y, kTol);
}

TEST_F(CudaOps, Activations) {
  auto x = randv(R * C, 6);
  auto a = x, b = x;
  xv::ops::gelu_erf(a.data(), int64_t(a.size()));
  xv::ops::quick_gelu(b.data(), int64_t(b.size()));
  Dev da(x), db(x);
  xv::cuda::gelu_erf(da.p, int64_t(x.size()));
  xv::cuda::quick_gelu(db.p, int64_t(x.size()));
  expect_close(da.get(x.size()), a, kTol);
  expect_close(db.get(x.size()), b, kTol);
}

TEST_F(CudaOps, SwiGLU) {
  auto gu = randv(R * 2 * C, 7);
  std::vector<float> o(R * C);
  xv::ops::swiglu(gu.data(), o.data(), R, C);
  Dev dgu(gu), d_o(o);
  xv::cuda::swiglu(dgu.p, d_o.p, R, C);
  expect_close(d_o.get(o.size()), o, kTol);
}

TEST_F(CudaOps, L2Normalize) {
  auto x = randv(R * C, 8);
  auto y = x;
  xv::ops::l2_normalize(y.data(), R, C);
  Dev dx(x);
  xv::cuda::l2_normalize(dx.p, R, C);
  expect_close(dx.get(x.size()), y, kTol);
}

}  // namespace
