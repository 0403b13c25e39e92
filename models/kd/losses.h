// The self-KD losses (docs/design.md section 2) on pooled embeddings, with their gradients:
//   L = 1/2 [ MSE(S(x_en), T(x_en)) + MSE(S(x_xx), T(x_en)) ]
//   image-prefix variant: the same two terms on the mean-pooled prefix added, the four terms averaged.
// MSE is the mean over batch and dimension. The gradients are scaled by loss_scale (1 / micro-batches) and
// written into fresh tensors on the embeddings' device. Each pair of terms against one target is one pass of
// ops::distill_loss.
#pragma once
#include "core/tensor.h"
#include "models/kd/kd_model.h"

namespace xv {

struct KdGrads {
  Tensor d_en, d_xx;    // (B, D) at the pooled student embeddings
  Tensor dp_en, dp_xx;  // (B, D) at the pooled prefixes (the image-prefix variant)
};

// s_en, s_xx, t_en (B, D). With p_en, p_xx, t_pre (B, D) (all non-null), the image-prefix variant.
KdLossTerms kd_loss(const Tensor& s_en, const Tensor& s_xx, const Tensor& t_en, float loss_scale, KdGrads* g,
                    const Tensor* p_en = nullptr, const Tensor* p_xx = nullptr, const Tensor* t_pre = nullptr);

}  // namespace xv
