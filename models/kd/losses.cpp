#include "models/kd/losses.h"

#include "kernels/ops.h"

namespace xv {

namespace {

// Both terms against one target in one pass (ops::distill_loss): d_en, d_xx are new tensors of the shape.
ops::DistillTerms pair_terms(const Tensor& s_en, const Tensor& s_xx, const Tensor& t, float weight, Tensor* d_en,
                             Tensor* d_xx) {
  for (const Tensor* s : {&s_en, &s_xx})
    XV_CHECK(s->numel() == t.numel(), "kd loss: student {} and teacher {} embeddings differ in shape",
             shape_str(s->shape()), shape_str(t.shape()));
  *d_en = Tensor(s_en.shape(), DType::F32, s_en.device());
  *d_xx = Tensor(s_xx.shape(), DType::F32, s_xx.device());
  return ops::distill_loss(s_en, s_xx, t, weight, *d_en, *d_xx);
}

}  // namespace

KdLossTerms kd_loss(const Tensor& s_en, const Tensor& s_xx, const Tensor& t_en, float loss_scale, KdGrads* g,
                    const Tensor* p_en, const Tensor* p_xx, const Tensor* t_pre) {
  const bool prefix = p_en && p_xx && t_pre;
  const float w = (prefix ? 0.25f : 0.5f) * loss_scale;
  KdLossTerms out;
  const ops::DistillTerms main = pair_terms(s_en, s_xx, t_en, w, &g->d_en, &g->d_xx);
  out.loss_en = main.en, out.loss_xx = main.xx;
  if (!prefix) {
    out.loss = 0.5 * (out.loss_en + out.loss_xx);
    return out;
  }
  const ops::DistillTerms pre = pair_terms(*p_en, *p_xx, *t_pre, w, &g->dp_en, &g->dp_xx);
  out.prefix_en = pre.en, out.prefix_xx = pre.xx;
  out.loss = 0.25 * (out.loss_en + out.loss_xx + out.prefix_en + out.prefix_xx);
  return out;
}

}  // namespace xv
