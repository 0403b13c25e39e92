#include "models/kd/losses.h"

#include "kernels/ops.h"

namespace xv {

double mse_term(const Tensor& s, const Tensor& t, float weight, Tensor* d) {
  XV_CHECK(s.numel() == t.numel(), "kd loss: student {} and teacher {} embeddings differ in shape",
           shape_str(s.shape()), shape_str(t.shape()));
  *d = Tensor(s.shape(), DType::F32, s.device());
  ops::mse_loss(s, t, *d, weight);
  return ops::mse_loss(s, t, View{}, 1.0f);
}

KdLossTerms kd_loss(const Tensor& s_en, const Tensor& s_xx, const Tensor& t_en, float loss_scale, KdGrads* g,
                    const Tensor* p_en, const Tensor* p_xx, const Tensor* t_pre) {
  const bool prefix = p_en && p_xx && t_pre;
  const float w = (prefix ? 0.25f : 0.5f) * loss_scale;
  KdLossTerms out;
  out.loss_en = mse_term(s_en, t_en, w, &g->d_en);
  out.loss_xx = mse_term(s_xx, t_en, w, &g->d_xx);
  if (!prefix) {
    out.loss = 0.5 * (out.loss_en + out.loss_xx);
    return out;
  }
  out.prefix_en = mse_term(*p_en, *t_pre, w, &g->dp_en);
  out.prefix_xx = mse_term(*p_xx, *t_pre, w, &g->dp_xx);
  out.loss = 0.25 * (out.loss_en + out.loss_xx + out.prefix_en + out.prefix_xx);
  return out;
}

}  // namespace xv
