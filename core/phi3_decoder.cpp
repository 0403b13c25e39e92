#include "core/phi3_decoder.h"

#include <cmath>

#include "core/safetensors.h"
#include "kernels/ops.h"

namespace xv {

Phi3Decoder Phi3Decoder::from_weights(const Phi3VConfig& cfg, const WeightStore& ws) {
  Phi3Decoder m;
  m.cfg = cfg;
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, D = cfg.head_dim();
  const int64_t Hq = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads;
  m.embed = ws.get("model.embed_tokens.weight", {cfg.vocab_size, C});
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Phi3Layer L;
    L.in_ln = ws.get(p + "input_layernorm.weight", {C});
    L.qkv_w = ws.get(p + "self_attn.qkv_proj.weight", {(Hq + 2 * Hkv) * D, C});
    L.o_w = ws.get(p + "self_attn.o_proj.weight", {C, Hq * D});
    L.post_ln = ws.get(p + "post_attention_layernorm.weight", {C});
    L.gate_up_w = ws.get(p + "mlp.gate_up_proj.weight", {2 * I, C});
    L.down_w = ws.get(p + "mlp.down_proj.weight", {C, I});
    m.layers.push_back(std::move(L));
  }
  m.norm = ws.get("model.norm.weight", {C});
  return m;
}

void Phi3Decoder::rope_tables(int64_t T, Tensor* cos, Tensor* sin) const {
  const int64_t D = cfg.head_dim();
  *cos = Tensor({T, D});
  *sin = Tensor({T, D});
  const float* ext = nullptr;
  float mscale = 1.0f;
  if (!cfg.rope_type.empty()) {
    ext = T > cfg.original_max_position_embeddings ? cfg.rope_long_factor.data() : cfg.rope_short_factor.data();
    const double scale = double(cfg.max_position_embeddings) / double(cfg.original_max_position_embeddings);
    if (scale > 1.0)
      mscale = float(std::sqrt(1.0 + std::log(scale) / std::log(double(cfg.original_max_position_embeddings))));
  }
  ops::rope_tables(T, D, cfg.rope_theta, ext, mscale, cos->ptr(), sin->ptr());
}

void Phi3Decoder::forward(Tensor& x, const std::vector<float>& mask, int64_t B, int64_t T) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, D = cfg.head_dim();
  const int64_t Hq = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads, N = B * T;
  const int64_t QKV = (Hq + 2 * Hkv) * D;
  XV_CHECK(x.numel() == N * C, "phi3 forward: x must be (B, T, C) = ({}, {}, {})", B, T, C);
  Tensor cos, sin;
  rope_tables(T, &cos, &sin);
  Tensor h({N, C}), qkv({N, QKV}), att({N, Hq * D}), gu({N, 2 * I}), act({N, I});
  for (const Phi3Layer& L : layers) {
    ops::rmsnorm(x.ptr(), L.in_ln.ptr(), h.ptr(), N, C, cfg.rms_norm_eps);
    ops::linear(h.ptr(), L.qkv_w.ptr(), nullptr, qkv.ptr(), N, C, QKV);
    ops::rope(qkv.ptr(), B, T, Hq, D, D, QKV, cos.ptr(), sin.ptr());
    ops::rope(qkv.ptr() + Hq * D, B, T, Hkv, D, D, QKV, cos.ptr(), sin.ptr());
    ops::AttentionParams p;
    p.q = qkv.ptr(), p.k = qkv.ptr() + Hq * D, p.v = qkv.ptr() + (Hq + Hkv) * D, p.o = att.ptr();
    p.q_stride = p.k_stride = p.v_stride = QKV, p.o_stride = Hq * D;
    p.B = B, p.T = T, p.Hq = Hq, p.Hkv = Hkv, p.D = D;
    p.key_mask = mask.data();
    p.causal = true;
    p.scale = 1.0f / std::sqrt(float(D));
    ops::attention(p);
    ops::linear(att.ptr(), L.o_w.ptr(), nullptr, h.ptr(), N, Hq * D, C);
    ops::add_inplace(x.ptr(), h.ptr(), N * C);
    ops::rmsnorm(x.ptr(), L.post_ln.ptr(), h.ptr(), N, C, cfg.rms_norm_eps);
    ops::linear(h.ptr(), L.gate_up_w.ptr(), nullptr, gu.ptr(), N, C, 2 * I);
    ops::swiglu(gu.ptr(), act.ptr(), N, I);
    ops::linear(act.ptr(), L.down_w.ptr(), nullptr, h.ptr(), N, I, C);
    ops::add_inplace(x.ptr(), h.ptr(), N * C);
  }
  ops::rmsnorm(x.ptr(), norm.ptr(), x.ptr(), N, C, cfg.rms_norm_eps);
}

}  // namespace xv
