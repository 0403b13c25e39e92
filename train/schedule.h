// AdamW (decoupled weight decay, as torch.optim.AdamW), global-norm gradient clipping (as
// torch.nn.utils.clip_grad_norm_) and learning-rate schedules with linear warmup (as transformers'
// get_{constant,linear,cosine}_schedule_with_warmup).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/ops.h"

namespace xv {

// AdamW's hyper-parameters (kernels/ops.h).
using AdamWConfig = ops::AdamWParams;

// One parameter tensor, its gradient and its moments. Pointers stay owned by the caller (the model or
// its adapters); the moments live here.
struct ParamRef {
  Tensor* param;
  Tensor* grad;
  Tensor m, v;  // (same shape), f32
};

class AdamW {
 public:
  AdamW(std::vector<std::pair<Tensor*, Tensor*>> params, AdamWConfig cfg);
  // One update with learning rate `lr` (the schedule's value for this step).
  void step(float lr);
  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }  // when resuming: the moments come from the checkpoint
  std::vector<ParamRef>& params() { return params_; }

 private:
  std::vector<ParamRef> params_;
  AdamWConfig cfg_;
  int64_t t_ = 0;
};

// Global L2 norm of all gradients (norm of the per-tensor norms, as torch does); when max_norm > 0 every
// gradient is scaled by min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor*>& grads, double max_norm);

// lr multiplier at optimizer step `step` (0-based count of updates already made).
// kind: "constant", "linear" or "cosine"; warmup steps ramp linearly from 0.
double lr_lambda(const std::string& kind, int64_t step, int64_t warmup, int64_t total);

}  // namespace xv
