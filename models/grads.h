// Gradient tensors shaped as the weights they belong to (full fine-tuning): F32 zeros on the model's device.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace xv {

// The gradients of one layer: `walk(x, fn)` calls fn on each tensor of a layer's weights or gradients, in the
// same field order for both.
template <typename LayerGrads, typename Layer, typename Walk>
LayerGrads grads_like(const Layer& weights, Device d, Walk walk) {
  LayerGrads g;
  std::vector<Tensor*> gs;
  walk(g, [&](Tensor& t) { gs.push_back(&t); });
  size_t i = 0;
  walk(weights, [&](const Tensor& w) { *gs[i++] = Tensor(w.shape(), DType::F32, d); });
  return g;
}

}  // namespace xv
