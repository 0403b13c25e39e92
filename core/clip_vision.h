// CLIP vision tower (pre-LN ViT, quick_gelu, CLS token + learned positions) as Phi-3-vision uses it:
// features are the hidden states of layer `layer_idx` (-2: the input of the last layer), so only the
// layers up to there run; post_layernorm is never applied.
#pragma once
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/tensor.h"

namespace xv {

class WeightStore;

struct ClipLayer {
  Tensor ln1_g, ln1_b;  // (C)
  Tensor qkv_w;         // (3C, C) q_proj, k_proj, v_proj stacked at load
  Tensor qkv_b;         // (3C)
  Tensor out_w;         // (C, C)
  Tensor out_b;         // (C)
  Tensor ln2_g, ln2_b;  // (C)
  Tensor fc1_w;         // (I, C)
  Tensor fc1_b;         // (I)
  Tensor fc2_w;         // (C, I)
  Tensor fc2_b;         // (C)
};

struct ClipVision {
  ClipVisionConfig cfg;
  int layer_idx = -2;
  Tensor patch_w;    // (C, 3*P*P): Conv2d(3, C, P, stride P, bias=False) weight flattened
  Tensor class_emb;  // (C)
  Tensor pos_emb;    // (1 + num_patches, C)
  Tensor pre_ln_g, pre_ln_b;  // (C)
  std::vector<ClipLayer> layers;  // only the layers that feed layer_idx are loaded

  static ClipVision from_weights(const ClipVisionConfig& cfg, int layer_idx, const WeightStore& ws,
                                 const std::string& prefix);
  // pixels (N, 3, S, S) -> hidden state `layer_idx` without the CLS token: (N, num_patches, C).
  Tensor forward_patches(const float* pixels, int64_t N) const;
};

}  // namespace xv
