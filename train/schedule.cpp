#include "train/schedule.h"

#include "kernels/ops.h"

#include <algorithm>
#include <cmath>

namespace xv {

AdamW::AdamW(std::vector<std::pair<Tensor*, Tensor*>> params, AdamWConfig cfg) : cfg_(cfg) {
  for (auto& [p, g] : params) {
    XV_CHECK(p->shape == g->shape, "adamw: parameter {} and gradient {} shapes differ", shape_str(p->shape),
             shape_str(g->shape));
    params_.push_back({p, g, Tensor(p->shape), Tensor(p->shape)});
  }
}

void AdamW::step(float lr) {
  ++t_;
  for (auto& pr : params_)
    ops::adamw_update(pr.param->ptr(), pr.grad->ptr(), pr.m.ptr(), pr.v.ptr(), pr.param->numel(), lr, t_, cfg_);
}

double clip_grad_norm(const std::vector<Tensor*>& grads, double max_norm) {
  double total = 0.0;
  for (const Tensor* g : grads) {
    double s = 0.0;
    for (float v : g->data) s += double(v) * v;
    total += s;
  }
  const double norm = std::sqrt(total);
  if (max_norm > 0.0) {
    const float coef = float(std::min(1.0, max_norm / (norm + 1e-6)));
    for (Tensor* g : grads)
      for (auto& v : g->data) v *= coef;
  }
  return norm;
}

double lr_lambda(const std::string& kind, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return double(step) / double(std::max<int64_t>(1, warmup));
  if (kind == "constant") return 1.0;
  const double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  if (kind == "linear") return std::max(0.0, 1.0 - progress);
  if (kind == "cosine") return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));  // half a cycle
  fail("lr schedule must be constant, linear or cosine, not '{}'", kind);
}

}  // namespace xv
