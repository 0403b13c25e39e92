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
  ops::fill(dA, 0.0f);
  ops::fill(dB, 0.0f);
}

LoraAdapter make_lora(const std::string& module, int64_t in, int64_t out, const LoraConfig& cfg, uint64_t seed,
                      Device d) {
  XV_CHECK(cfg.r >= 1, "lora: r must be >= 1, found {}", cfg.r);
  LoraAdapter a;
  a.module = module;
  a.in = in, a.out = out, a.r = cfg.r;
  a.scaling = cfg.scaling();
  XV_CHECK(cfg.dropout >= 0.0f && cfg.dropout < 1.0f, "lora: dropout must be in [0, 1), found {}", cfg.dropout);
  a.dropout = cfg.dropout;
  a.B = Tensor({out, cfg.r}, DType::F32, d);  // zeros: the student starts equal to the teacher
  a.dA = Tensor({cfg.r, in}, DType::F32, d);
  a.dB = Tensor({out, cfg.r}, DType::F32, d);
  std::vector<float> init(static_cast<size_t>(cfg.r * in));
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
    for (auto& v : init) v = float((2.0 * next() - 1.0) * bound);
  } else if (cfg.init == "gaussian") {
    for (auto& v : init) {
      const double u1 = next() + 1e-300, u2 = next();
      v = float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2) / double(cfg.r));
    }
  } else {
    fail("lora: init must be 'kaiming' or 'gaussian', not '{}'", cfg.init);
  }
  a.A = Tensor::from_vector({cfg.r, in}, init, DType::F32, d);
  return a;
}

void lora_forward(const LoraAdapter& a, const View& x, const View& y, uint64_t dropout_seed, Tensor* xa) {
  Tensor local_xa;
  if (!xa) xa = &local_xa;
  const int64_t M = x.rows;
  if (xa->empty() || xa->numel() != M * a.r || xa->device() != x.device) *xa = Tensor({M, a.r}, DType::F32, x.device);
  ops::lora_forward(x, a.A, a.B, a.scaling, dropout_seed, a.dropout, y, *xa);
}

void lora_backward(LoraAdapter& a, const View& x, const Tensor& xa, uint64_t dropout_seed, const View& dy,
                   const View& dx) {
  ops::lora_backward(x, a.A, a.B, xa, a.scaling, dropout_seed, a.dropout, dy, dx, a.dA, a.dB);
}

}  // namespace xv
