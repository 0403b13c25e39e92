#include "models/lora.h"

#include <cmath>

#include "kernels/ops.h"

namespace xv {

float LoraConfig::scaling() const {
  return rslora ? alpha / std::sqrt(float(r)) : alpha / float(r);
}

bool LoraConfig::targets_module(const std::string& path) const {
  for (const auto& t : targets) {
    if (path == t) return true;
    if (path.size() > t.size() && path.compare(path.size() - t.size(), t.size(), t) == 0 &&
        path[path.size() - t.size() - 1] == '.')
      return true;
  }
  return false;
}

void LoraAdapter::zero_grad() {
  std::fill(dA.data.begin(), dA.data.end(), 0.0f);
  std::fill(dB.data.begin(), dB.data.end(), 0.0f);
}

LoraAdapter make_lora(const std::string& module, int64_t in, int64_t out, const LoraConfig& cfg, uint64_t seed) {
  XV_CHECK(cfg.r >= 1, "lora: r must be >= 1, found {}", cfg.r);
  LoraAdapter a;
  a.module = module;
  a.in = in, a.out = out, a.r = cfg.r;
  a.scaling = cfg.scaling();
  XV_CHECK(cfg.dropout >= 0.0f && cfg.dropout < 1.0f, "lora: dropout must be in [0, 1), found {}", cfg.dropout);
  a.dropout = cfg.dropout;
  a.A = Tensor({cfg.r, in});
  a.B = Tensor({out, cfg.r});  // zeros: the student starts equal to the teacher
  a.dA = Tensor({cfg.r, in});
  a.dB = Tensor({out, cfg.r});
  // splitmix64 stream per adapter: deterministic on every platform.
  uint64_t s = seed;
  auto next = [&s]() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
  };
  if (cfg.init == "kaiming") {
    const double bound = 1.0 / std::sqrt(double(in));  // kaiming_uniform_(a = sqrt 5) on (r, in)
    for (auto& v : a.A.data) v = float((2.0 * next() - 1.0) * bound);
  } else if (cfg.init == "gaussian") {
    for (auto& v : a.A.data) {
      const double u1 = next() + 1e-300, u2 = next();
      v = float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2) / double(cfg.r));
    }
  } else {
    fail("lora: init must be 'kaiming' or 'gaussian', not '{}'", cfg.init);
  }
  return a;
}

namespace {

// Keep decision for element i of a stream: a splitmix64 hash compared with p. Inverted-dropout scale 1/(1-p).
inline bool dropout_keep(uint64_t seed, uint64_t i, float p) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return double(z >> 11) * (1.0 / 9007199254740992.0) >= double(p);
}

bool dropout_on(const LoraAdapter& a, uint64_t seed) { return seed != 0 && a.dropout > 0.0f; }

}  // namespace

void lora_forward(const LoraAdapter& a, const float* x, int64_t M, float* y, int64_t y_stride, uint64_t dropout_seed,
                  Tensor* xa, Tensor* xd) {
  Tensor local_xa, local_xd;
  if (!xa) xa = &local_xa;
  if (!xd) xd = &local_xd;
  const float* in = x;
  if (dropout_on(a, dropout_seed)) {
    *xd = Tensor({M, a.in});
    const float scale = 1.0f / (1.0f - a.dropout);
    const int64_t n = M * a.in;
    float* d = xd->ptr();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) d[i] = dropout_keep(dropout_seed, uint64_t(i), a.dropout) ? x[i] * scale : 0.0f;
    in = xd->ptr();
  } else {
    *xd = Tensor();
  }
  if (xa->numel() != M * a.r) *xa = Tensor({M, a.r});
  // xa (M, r) = in A^T; y += scaling * xa B^T
  ops::gemm(false, true, M, a.r, a.in, 1.0f, in, a.in, a.A.ptr(), a.in, 0.0f, xa->ptr(), a.r);
  ops::gemm(false, true, M, a.out, a.r, a.scaling, xa->ptr(), a.r, a.B.ptr(), a.r, 1.0f, y, y_stride);
}

void lora_backward(LoraAdapter& a, const float* x, const float* xa, const Tensor& xd, uint64_t dropout_seed,
                   const float* dy, int64_t dy_stride, int64_t M, float* dx) {
  const bool drop = dropout_on(a, dropout_seed);
  XV_CHECK(!drop || xd.numel() == M * a.in, "lora backward: the forward's dropout input is missing");
  const float* in = drop ? xd.ptr() : x;
  // dB (out, r) += scaling * dy^T xa
  ops::gemm(true, false, a.out, a.r, M, a.scaling, dy, dy_stride, xa, a.r, 1.0f, a.dB.ptr(), a.r);
  // dxa (M, r) = scaling * dy B
  std::vector<float> dxa(static_cast<size_t>(M * a.r));
  ops::gemm(false, false, M, a.r, a.out, a.scaling, dy, dy_stride, a.B.ptr(), a.r, 0.0f, dxa.data(), a.r);
  // dA (r, in) += dxa^T in
  ops::gemm(true, false, a.r, a.in, M, 1.0f, dxa.data(), a.r, in, a.in, 1.0f, a.dA.ptr(), a.in);
  if (!dx) return;
  if (!drop) {  // dx (M, in) += dxa A
    ops::gemm(false, false, M, a.in, a.r, 1.0f, dxa.data(), a.r, a.A.ptr(), a.in, 1.0f, dx, a.in);
    return;
  }
  // Through the mask: dx += keep / (1 - p) * (dxa A).
  Tensor din({M, a.in});
  ops::gemm(false, false, M, a.in, a.r, 1.0f, dxa.data(), a.r, a.A.ptr(), a.in, 0.0f, din.ptr(), a.in);
  const float scale = 1.0f / (1.0f - a.dropout);
  const int64_t n = M * a.in;
  const float* d = din.ptr();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    if (dropout_keep(dropout_seed, uint64_t(i), a.dropout)) dx[i] += d[i] * scale;
}

}  // namespace xv
