#include "models/phi3_decoder.h"

#include <algorithm>
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

Phi3Grads Phi3Grads::zeros_like(const Phi3Decoder& m) {
  Phi3Grads g;
  g.embed = Tensor(m.embed.shape);
  for (const Phi3Layer& L : m.layers) {
    Phi3LayerGrads G;
    G.in_ln = Tensor(L.in_ln.shape), G.qkv_w = Tensor(L.qkv_w.shape), G.o_w = Tensor(L.o_w.shape);
    G.post_ln = Tensor(L.post_ln.shape), G.gate_up_w = Tensor(L.gate_up_w.shape), G.down_w = Tensor(L.down_w.shape);
    g.layers.push_back(std::move(G));
  }
  g.norm = Tensor(m.norm.shape);
  return g;
}

void Phi3Grads::zero() {
  auto z = [](Tensor& t) { std::fill(t.data.begin(), t.data.end(), 0.0f); };
  z(embed), z(norm);
  for (Phi3LayerGrads& G : layers)
    for (Tensor* t : {&G.in_ln, &G.qkv_w, &G.o_w, &G.post_ln, &G.gate_up_w, &G.down_w}) z(*t);
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

const char* phi3_slot_module(int slot) {
  static const char* names[kPhi3Slots] = {"self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj",
                                          "mlp.down_proj"};
  return names[slot];
}

namespace {

// Causal attention over the fused qkv rows (q, k, v at column offsets 0, Hq D, (Hq + Hkv) D).
ops::AttentionParams phi3_attention(const Phi3VConfig& cfg, const float* qkv, float* o, const std::vector<float>& mask,
                                    int64_t B, int64_t T) {
  const int64_t D = cfg.head_dim(), Hq = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads;
  const int64_t QKV = (Hq + 2 * Hkv) * D;
  ops::AttentionParams p;
  p.q = qkv, p.k = qkv + Hq * D, p.v = qkv + (Hq + Hkv) * D, p.o = o;
  p.q_stride = p.k_stride = p.v_stride = QKV, p.o_stride = Hq * D;
  p.B = B, p.T = T, p.Hq = Hq, p.Hkv = Hkv, p.D = D;
  p.key_mask = mask.data();
  p.causal = true;
  p.scale = 1.0f / std::sqrt(float(D));
  return p;
}

}  // namespace

void Phi3Decoder::layer_forward(int64_t l, Tensor& x, const std::vector<float>& mask, int64_t B, int64_t T,
                                const Tensor& cos, const Tensor& sin, const Phi3DecoderLora* lora, const LoraRun& run,
                                Phi3LayerActs* acts) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, D = cfg.head_dim();
  const int64_t Hq = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads, N = B * T;
  const int64_t QKV = (Hq + 2 * Hkv) * D;
  const Phi3Layer& L = layers[size_t(l)];
  Phi3LayerActs local;
  Phi3LayerActs& A = acts ? *acts : local;
  if (acts) A.x_in = x;
  A.h1 = Tensor({N, C});
  A.qkv = Tensor({N, QKV});
  A.att = Tensor({N, Hq * D});
  A.h2 = Tensor({N, C});
  A.gu = Tensor({N, 2 * I});
  A.act = Tensor({N, I});
  Tensor tmp({N, C});
  // y (rows y_stride apart) += LoRA of slot s on `in`.
  auto adapt = [&](int s, const float* in, float* y, int64_t y_stride) {
    const LoraAdapter* a = lora ? lora->at[size_t(l)][size_t(s)] : nullptr;
    if (a) lora_forward(*a, in, N, y, y_stride, run.for_adapter(l * kPhi3Slots + s), &A.xa[size_t(s)], &A.xd[size_t(s)]);
  };
  ops::rmsnorm(x.ptr(), L.in_ln.ptr(), A.h1.ptr(), N, C, cfg.rms_norm_eps);
  ops::linear(A.h1.ptr(), L.qkv_w.ptr(), nullptr, A.qkv.ptr(), N, C, QKV);
  adapt(kPhi3Qkv, A.h1.ptr(), A.qkv.ptr(), QKV);
  ops::rope(A.qkv.ptr(), B, T, Hq, D, D, QKV, cos.ptr(), sin.ptr());
  ops::rope(A.qkv.ptr() + Hq * D, B, T, Hkv, D, D, QKV, cos.ptr(), sin.ptr());
  ops::attention(phi3_attention(cfg, A.qkv.ptr(), A.att.ptr(), mask, B, T));
  ops::linear(A.att.ptr(), L.o_w.ptr(), nullptr, tmp.ptr(), N, Hq * D, C);
  adapt(kPhi3O, A.att.ptr(), tmp.ptr(), C);
  ops::add_inplace(x.ptr(), tmp.ptr(), N * C);
  if (acts) A.x_mid = x;
  ops::rmsnorm(x.ptr(), L.post_ln.ptr(), A.h2.ptr(), N, C, cfg.rms_norm_eps);
  ops::linear(A.h2.ptr(), L.gate_up_w.ptr(), nullptr, A.gu.ptr(), N, C, 2 * I);
  adapt(kPhi3GateUp, A.h2.ptr(), A.gu.ptr(), 2 * I);
  ops::swiglu(A.gu.ptr(), A.act.ptr(), N, I);
  ops::linear(A.act.ptr(), L.down_w.ptr(), nullptr, tmp.ptr(), N, I, C);
  adapt(kPhi3Down, A.act.ptr(), tmp.ptr(), C);
  ops::add_inplace(x.ptr(), tmp.ptr(), N * C);
}

void Phi3Decoder::forward(Tensor& x, const std::vector<float>& mask, int64_t B, int64_t T) const {
  forward(x, mask, B, T, nullptr, nullptr, LoraRun{});
}

void Phi3Decoder::forward(Tensor& x, const std::vector<float>& mask, int64_t B, int64_t T, const Phi3DecoderLora* lora,
                          Phi3Acts* acts, const LoraRun& run) const {
  const int64_t C = cfg.hidden_size, N = B * T;
  XV_CHECK(x.numel() == N * C, "phi3 forward: x must be (B, T, C) = ({}, {}, {})", B, T, C);
  XV_CHECK(int64_t(mask.size()) == N, "phi3 forward: mask must hold B*T = {}", N);
  XV_CHECK(!lora || lora->at.size() == layers.size(), "phi3 forward: LoRA map has {} layers, the decoder {}",
           lora ? lora->at.size() : 0, layers.size());
  Phi3Acts local;
  Phi3Acts& A = acts ? *acts : local;
  begin_acts(A, mask, B, T, acts != nullptr);
  for (int64_t l = 0; l < int64_t(layers.size()); ++l) {
    if (acts) layer_forward_kept(l, x, *acts, lora, run);
    else layer_forward(l, x, mask, B, T, A.cos, A.sin, lora, run, nullptr);
  }
  final_norm(x, acts);
}

void Phi3Decoder::begin_acts(Phi3Acts& acts, const std::vector<float>& mask, int64_t B, int64_t T,
                             bool training) const {
  rope_tables(T, &acts.cos, &acts.sin);
  acts.B = B, acts.T = T, acts.mask = mask;
  if (training) acts.layers.assign(layers.size(), {});
}

void Phi3Decoder::layer_forward_kept(int64_t l, Tensor& x, Phi3Acts& acts, const Phi3DecoderLora* lora,
                                     const LoraRun& run) const {
  if (!acts.checkpointing)
    return layer_forward(l, x, acts.mask, acts.B, acts.T, acts.cos, acts.sin, lora, run, &acts.layers[size_t(l)]);
  acts.layers[size_t(l)].x_in = x;  // the only thing kept
  Phi3LayerActs scratch;
  layer_forward(l, x, acts.mask, acts.B, acts.T, acts.cos, acts.sin, lora, run, &scratch);
}

void Phi3Decoder::final_norm(Tensor& x, Phi3Acts* acts) const {
  const int64_t N = x.numel() / cfg.hidden_size;
  if (acts) acts->x_last = x;
  ops::rmsnorm(x.ptr(), norm.ptr(), x.ptr(), N, cfg.hidden_size, cfg.rms_norm_eps);
}

Tensor Phi3Decoder::backward(Phi3Acts& acts, const Tensor& dhidden, const Phi3DecoderLora& lora, const LoraRun& run,
                             bool need_dinput, Phi3Grads* grads) const {
  Tensor dx = backward_begin(acts, dhidden, lora, grads);
  for (int64_t l = int64_t(layers.size()) - 1; l >= 0; --l) layer_backward(l, acts, dx, lora, run, need_dinput, grads);
  if (!need_dinput) return Tensor();
  dx.reshape({acts.B, acts.T, cfg.hidden_size});
  return dx;
}

Tensor Phi3Decoder::backward_begin(const Phi3Acts& acts, const Tensor& dhidden, const Phi3DecoderLora& lora,
                                   Phi3Grads* grads) const {
  const int64_t N = acts.B * acts.T, C = cfg.hidden_size;
  XV_CHECK(dhidden.numel() == N * C, "phi3 backward: dhidden must be (B, T, C) = ({}, {}, {})", acts.B, acts.T, C);
  XV_CHECK(acts.layers.size() == layers.size() && acts.x_last.numel() == N * C,
           "phi3 backward: the activations of a forward pass are missing");
  XV_CHECK(lora.at.size() == layers.size(), "phi3 backward: LoRA map has {} layers, the decoder {}", lora.at.size(),
           layers.size());
  XV_CHECK(!grads || grads->layers.size() == layers.size(),
           "phi3 backward: full gradients need Phi3Grads::zeros_like(decoder)");
  // dx: the gradient at the last layer's output (N, C), through the final norm.
  Tensor dx({N, C});
  ops::rmsnorm_backward(acts.x_last.ptr(), norm.ptr(), dhidden.ptr(), dx.ptr(), grads ? grads->norm.ptr() : nullptr,
                        N, C, cfg.rms_norm_eps);
  return dx;
}

void Phi3Decoder::layer_backward(int64_t l, Phi3Acts& acts, Tensor& dx, const Phi3DecoderLora& lora,
                                 const LoraRun& run, bool need_dinput, Phi3Grads* grads) const {
  const int64_t B = acts.B, T = acts.T, N = B * T;
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, D = cfg.head_dim();
  const int64_t Hq = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads, QKV = (Hq + 2 * Hkv) * D;
  const float eps = cfg.rms_norm_eps;
  Tensor dmid({N, C}), dh({N, C}), dact({N, I}), dgu({N, 2 * I}), datt({N, Hq * D}), dqkv({N, QKV});
  const Phi3Layer& L = layers[size_t(l)];
  Phi3LayerActs& A = acts.layers[size_t(l)];
  Phi3LayerGrads* G = grads ? &grads->layers[size_t(l)] : nullptr;
  auto gp = [&](Tensor Phi3LayerGrads::*f) -> float* { return G ? (G->*f).ptr() : nullptr; };
  if (acts.checkpointing) {  // recompute this layer from its kept input, with the same dropout masks
    Tensor x = A.x_in;
    layer_forward(l, x, acts.mask, B, T, acts.cos, acts.sin, &lora, run, &A);
  }
  auto adapt_back = [&](int s, const Tensor& in, const float* dy, int64_t dy_stride, float* din) {
    if (LoraAdapter* a = lora.at[size_t(l)][size_t(s)])
      lora_backward(*a, in.ptr(), A.xa[size_t(s)].ptr(), A.xd[size_t(s)], run.for_adapter(l * kPhi3Slots + s), dy,
                    dy_stride, N, din);
  };
  // x_out = x_mid + down(act), act = swiglu(gu), gu = gate_up(h2), h2 = post_ln(x_mid)
  ops::linear_backward(A.act.ptr(), L.down_w.ptr(), dx.ptr(), dact.ptr(), gp(&Phi3LayerGrads::down_w), nullptr, N,
                       I, C);
  adapt_back(kPhi3Down, A.act, dx.ptr(), C, dact.ptr());
  ops::swiglu_backward(A.gu.ptr(), dact.ptr(), dgu.ptr(), N, I);
  ops::linear_backward(A.h2.ptr(), L.gate_up_w.ptr(), dgu.ptr(), dh.ptr(), gp(&Phi3LayerGrads::gate_up_w), nullptr,
                       N, C, 2 * I);
  adapt_back(kPhi3GateUp, A.h2, dgu.ptr(), 2 * I, dh.ptr());
  ops::rmsnorm_backward(A.x_mid.ptr(), L.post_ln.ptr(), dh.ptr(), dmid.ptr(), gp(&Phi3LayerGrads::post_ln), N, C,
                        eps);
  ops::add_inplace(dmid.ptr(), dx.ptr(), N * C);
  // x_mid = x_in + o_proj(att), att = attention(rope(q), rope(k), v), qkv = qkv_proj(h1), h1 = in_ln(x_in)
  ops::linear_backward(A.att.ptr(), L.o_w.ptr(), dmid.ptr(), datt.ptr(), gp(&Phi3LayerGrads::o_w), nullptr, N,
                       Hq * D, C);
  adapt_back(kPhi3O, A.att, dmid.ptr(), C, datt.ptr());
  ops::AttentionBackwardParams bp;
  bp.fwd = phi3_attention(cfg, A.qkv.ptr(), nullptr, acts.mask, B, T);
  bp.dout = datt.ptr(), bp.dout_stride = Hq * D;
  bp.dq = dqkv.ptr(), bp.dk = dqkv.ptr() + Hq * D, bp.dv = dqkv.ptr() + (Hq + Hkv) * D;
  bp.dq_stride = bp.dk_stride = bp.dv_stride = QKV;
  ops::attention_backward(bp);
  ops::rope_backward(dqkv.ptr(), B, T, Hq, D, D, QKV, acts.cos.ptr(), acts.sin.ptr());
  ops::rope_backward(dqkv.ptr() + Hq * D, B, T, Hkv, D, D, QKV, acts.cos.ptr(), acts.sin.ptr());
  if (l == 0 && !need_dinput && !grads) {  // nothing below needs a gradient: only the adapter's own
    adapt_back(kPhi3Qkv, A.h1, dqkv.ptr(), QKV, nullptr);
  } else {
    ops::linear_backward(A.h1.ptr(), L.qkv_w.ptr(), dqkv.ptr(), dh.ptr(), gp(&Phi3LayerGrads::qkv_w), nullptr, N, C,
                         QKV);
    adapt_back(kPhi3Qkv, A.h1, dqkv.ptr(), QKV, dh.ptr());
    ops::rmsnorm_backward(A.x_in.ptr(), L.in_ln.ptr(), dh.ptr(), dx.ptr(), gp(&Phi3LayerGrads::in_ln), N, C, eps);
    ops::add_inplace(dx.ptr(), dmid.ptr(), N * C);
  }
  if (acts.checkpointing) A = Phi3LayerActs{};  // free the recomputed activations
}

}  // namespace xv
