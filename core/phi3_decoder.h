// Phi-3 decoder (as in Phi-3.5-vision): RMSNorm, fused qkv_proj, RoPE (plain or su/longrope),
// causal attention with a key padding mask, fused gate_up_proj with SwiGLU, final RMSNorm.
#pragma once
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/tensor.h"

namespace xv {

class WeightStore;

struct Phi3Layer {
  Tensor in_ln;      // (C) input_layernorm
  Tensor qkv_w;      // ((Hq + 2 Hkv) D, C) self_attn.qkv_proj
  Tensor o_w;        // (C, Hq D) self_attn.o_proj
  Tensor post_ln;    // (C) post_attention_layernorm
  Tensor gate_up_w;  // (2 I, C) mlp.gate_up_proj: [gate | up]
  Tensor down_w;     // (C, I) mlp.down_proj
};

struct Phi3Decoder {
  Phi3VConfig cfg;
  Tensor embed;  // (V, C) model.embed_tokens
  std::vector<Phi3Layer> layers;
  Tensor norm;   // (C) model.norm

  static Phi3Decoder from_weights(const Phi3VConfig& cfg, const WeightStore& ws);

  // RoPE cos/sin (T, D) for positions 0..T-1 as the reference picks them: su/longrope uses the long
  // factors when T > original_max_position_embeddings (T = max position + 1), else the short ones.
  void rope_tables(int64_t T, Tensor* cos, Tensor* sin) const;

  // x (B, T, C) input embeddings, in place -> final hidden states after model.norm.
  // mask (B, T): 1 real token, 0 padding. Positions are 0..T-1 for every row (right padding).
  void forward(Tensor& x, const std::vector<float>& mask, int64_t B, int64_t T) const;
};

}  // namespace xv
