#include "core/clip_vision.h"

#include <cmath>

#include "core/safetensors.h"
#include "kernels/ops.h"

namespace xv {

ClipVision ClipVision::from_weights(const ClipVisionConfig& cfg, int layer_idx, const WeightStore& ws,
                                    const std::string& prefix) {
  ClipVision m;
  m.cfg = cfg;
  m.layer_idx = layer_idx;
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, P = cfg.patch_size;
  const std::string p = prefix + "vision_model.";
  m.patch_w = ws.get(p + "embeddings.patch_embedding.weight", {C, cfg.num_channels, P, P});
  m.patch_w.reshape({C, cfg.num_channels * P * P});
  m.class_emb = ws.get(p + "embeddings.class_embedding", {C});
  m.pos_emb = ws.get(p + "embeddings.position_embedding.weight", {1 + cfg.num_patches(), C});
  m.pre_ln_g = ws.get(p + "pre_layrnorm.weight", {C});
  m.pre_ln_b = ws.get(p + "pre_layrnorm.bias", {C});
  // hidden_states[k] is the output of layer k-1 (hidden_states[0] = embeddings); index -2 of L+1 states
  // needs layers 0..L-2.
  const int64_t n_run = cfg.num_hidden_layers + 1 + layer_idx;
  for (int64_t l = 0; l < n_run; ++l) {
    const std::string q = p + "encoder.layers." + std::to_string(l) + ".";
    ClipLayer L;
    L.ln1_g = ws.get(q + "layer_norm1.weight", {C});
    L.ln1_b = ws.get(q + "layer_norm1.bias", {C});
    L.qkv_w = concat_rows({ws.get(q + "self_attn.q_proj.weight", {C, C}), ws.get(q + "self_attn.k_proj.weight", {C, C}),
                    ws.get(q + "self_attn.v_proj.weight", {C, C})});
    L.qkv_b = concat_rows({ws.get(q + "self_attn.q_proj.bias", {C}), ws.get(q + "self_attn.k_proj.bias", {C}),
                    ws.get(q + "self_attn.v_proj.bias", {C})});
    L.out_w = ws.get(q + "self_attn.out_proj.weight", {C, C});
    L.out_b = ws.get(q + "self_attn.out_proj.bias", {C});
    L.ln2_g = ws.get(q + "layer_norm2.weight", {C});
    L.ln2_b = ws.get(q + "layer_norm2.bias", {C});
    L.fc1_w = ws.get(q + "mlp.fc1.weight", {I, C});
    L.fc1_b = ws.get(q + "mlp.fc1.bias", {I});
    L.fc2_w = ws.get(q + "mlp.fc2.weight", {C, I});
    L.fc2_b = ws.get(q + "mlp.fc2.bias", {C});
    m.layers.push_back(std::move(L));
  }
  return m;
}

Tensor ClipVision::forward_patches(const float* pixels, int64_t N) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, P = cfg.patch_size, S = cfg.image_size;
  const int64_t G = S / P, NP = G * G, T = NP + 1, CH = cfg.num_channels, K = CH * P * P;
  const int64_t H = cfg.num_attention_heads, D = C / H, R = N * T;
  // im2col: patches (N*NP, CH*P*P) in the conv weight's (c, kh, kw) order.
  Tensor cols({N * NP, K});
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < NP; ++g) {
      const int64_t gy = g / G, gx = g % G;
      float* dst = cols.ptr() + (n * NP + g) * K;
      for (int64_t c = 0; c < CH; ++c)
        for (int64_t ky = 0; ky < P; ++ky) {
          const float* src = pixels + ((n * CH + c) * S + gy * P + ky) * S + gx * P;
          std::copy(src, src + P, dst + (c * P + ky) * P);
        }
    }
  Tensor pe({N * NP, C});
  ops::linear(cols.ptr(), patch_w.ptr(), nullptr, pe.ptr(), N * NP, K, C);
  // x (N, T, C): [CLS, patches] + positions, then pre-LayerNorm.
  Tensor x({R, C});
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const float* src = t == 0 ? class_emb.ptr() : pe.ptr() + (n * NP + t - 1) * C;
      const float* pos = pos_emb.ptr() + t * C;
      float* dst = x.ptr() + (n * T + t) * C;
      for (int64_t c = 0; c < C; ++c) dst[c] = src[c] + pos[c];
    }
  ops::layernorm(x.ptr(), pre_ln_g.ptr(), pre_ln_b.ptr(), x.ptr(), R, C, cfg.layer_norm_eps);

  Tensor h({R, C}), qkv({R, 3 * C}), att({R, C}), inter({R, I});
  for (const ClipLayer& L : layers) {
    ops::layernorm(x.ptr(), L.ln1_g.ptr(), L.ln1_b.ptr(), h.ptr(), R, C, cfg.layer_norm_eps);
    ops::linear(h.ptr(), L.qkv_w.ptr(), L.qkv_b.ptr(), qkv.ptr(), R, C, 3 * C);
    ops::AttentionParams p;
    p.q = qkv.ptr(), p.k = qkv.ptr() + C, p.v = qkv.ptr() + 2 * C, p.o = att.ptr();
    p.q_stride = p.k_stride = p.v_stride = 3 * C, p.o_stride = C;
    p.B = N, p.T = T, p.Hq = H, p.Hkv = H, p.D = D;
    p.scale = 1.0f / std::sqrt(float(D));
    ops::attention(p);
    ops::linear(att.ptr(), L.out_w.ptr(), L.out_b.ptr(), h.ptr(), R, C, C);
    ops::add_inplace(x.ptr(), h.ptr(), R * C);
    ops::layernorm(x.ptr(), L.ln2_g.ptr(), L.ln2_b.ptr(), h.ptr(), R, C, cfg.layer_norm_eps);
    ops::linear(h.ptr(), L.fc1_w.ptr(), L.fc1_b.ptr(), inter.ptr(), R, C, I);
    if (cfg.hidden_act == "quick_gelu") ops::quick_gelu(inter.ptr(), R * I);
    else ops::gelu_erf(inter.ptr(), R * I);
    ops::linear(inter.ptr(), L.fc2_w.ptr(), L.fc2_b.ptr(), h.ptr(), R, I, C);
    ops::add_inplace(x.ptr(), h.ptr(), R * C);
  }
  // Drop CLS: (N, NP, C).
  Tensor out({N, NP, C});
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    std::copy(x.ptr() + (n * T + 1) * C, x.ptr() + (n * T + T) * C, out.ptr() + n * NP * C);
  return out;
}

}  // namespace xv
