#include "models/phi3_decoder.h"

#include <algorithm>
#include <cmath>

#include "core/safetensors.h"
#include "kernels/ops.h"

namespace xv {

Phi3Decoder Phi3Decoder::from_weights(const Phi3VConfig& cfg, const WeightStore& ws, const LoadOptions& o) {
  Phi3Decoder m;
  m.cfg = cfg;
  m.device = o.device;
  // Read on the host in the storage dtype, then onto the device (a shape-only tensor just takes the device).
  auto get = [&](const std::string& n, const Shape& s) { return ws.get(n, s, o.weight_dtype).to(o.device); };
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, D = cfg.head_dim();
  const int64_t Hq = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads;
  m.embed = get("model.embed_tokens.weight", {cfg.vocab_size, C});
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Phi3Layer L;
    L.in_ln = get(p + "input_layernorm.weight", {C});
    L.qkv_w = get(p + "self_attn.qkv_proj.weight", {(Hq + 2 * Hkv) * D, C});
    L.o_w = get(p + "self_attn.o_proj.weight", {C, Hq * D});
    L.post_ln = get(p + "post_attention_layernorm.weight", {C});
    L.gate_up_w = get(p + "mlp.gate_up_proj.weight", {2 * I, C});
    L.down_w = get(p + "mlp.down_proj.weight", {C, I});
    m.layers.push_back(std::move(L));
  }
  m.norm = get("model.norm.weight", {C});
  return m;
}

Phi3Grads Phi3Grads::zeros_like(const Phi3Decoder& m) {
  Phi3Grads g;
  auto z = [&](const Tensor& w) { return Tensor(w.shape(), DType::F32, m.device); };
  g.embed = z(m.embed);
  for (const Phi3Layer& L : m.layers) {
    Phi3LayerGrads G;
    G.in_ln = z(L.in_ln), G.qkv_w = z(L.qkv_w), G.o_w = z(L.o_w);
    G.post_ln = z(L.post_ln), G.gate_up_w = z(L.gate_up_w), G.down_w = z(L.down_w);
    g.layers.push_back(std::move(G));
  }
  g.norm = z(m.norm);
  return g;
}

void Phi3Grads::zero() {
  ops::fill(embed, 0.0f), ops::fill(norm, 0.0f);
  for (Phi3LayerGrads& G : layers)
    for (Tensor* t : {&G.in_ln, &G.qkv_w, &G.o_w, &G.post_ln, &G.gate_up_w, &G.down_w}) ops::fill(*t, 0.0f);
}

void Phi3Decoder::rope_tables(int64_t T, Tensor* cos, Tensor* sin) const {
  const int64_t D = cfg.head_dim();
  *cos = Tensor({T, D}, DType::F32, device);
  *sin = Tensor({T, D}, DType::F32, device);
  std::vector<float> ext;  // empty: plain RoPE
  float mscale = 1.0f;
  if (!cfg.rope_type.empty()) {
    ext = T > cfg.original_max_position_embeddings ? cfg.rope_long_factor : cfg.rope_short_factor;
    const double scale = double(cfg.max_position_embeddings) / double(cfg.original_max_position_embeddings);
    if (scale > 1.0)
      mscale = float(std::sqrt(1.0 + std::log(scale) / std::log(double(cfg.original_max_position_embeddings))));
  }
  ops::rope_tables(cfg.rope_theta, ext, mscale, *cos, *sin);
}

const char* phi3_slot_module(int slot) {
  static const char* names[kPhi3Slots] = {"self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj",
                                          "mlp.down_proj"};
  return names[slot];
}

namespace {

// Causal attention over the fused qkv rows (q, k, v at column offsets 0, Hq D, (Hq + Hkv) D).
ops::AttentionParams phi3_attention(const Phi3VConfig& cfg, const Tensor& qkv, const View& o, const Tensor& mask,
                                    int64_t B, int64_t T) {
  const int64_t D = cfg.head_dim(), Hq = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads;
  ops::AttentionParams p;
  p.q = qkv.cols(0, Hq * D), p.k = qkv.cols(Hq * D, Hkv * D), p.v = qkv.cols((Hq + Hkv) * D, Hkv * D), p.o = o;
  p.B = B, p.T = T, p.Hq = Hq, p.Hkv = Hkv, p.D = D;
  p.key_mask = mask.view();
  p.causal = true;
  p.scale = 1.0f / std::sqrt(float(D));
  return p;
}

}  // namespace

void Phi3Decoder::layer_forward(int64_t l, Tensor& x, const Tensor& mask, int64_t B, int64_t T, const Tensor& cos,
                                const Tensor& sin, const Phi3DecoderLora* lora, const LoraRun& run,
                                Phi3LayerActs* acts) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, D = cfg.head_dim();
  const int64_t Hq = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads, N = B * T;
  const int64_t QKV = (Hq + 2 * Hkv) * D;
  const Phi3Layer& L = layers[size_t(l)];
  auto act = [&](Shape s) { return Tensor(std::move(s), DType::F32, device); };
  Phi3LayerActs local;
  Phi3LayerActs& A = acts ? *acts : local;
  if (acts) A.x_in = x;
  A.h1 = act({N, C});
  A.qkv = act({N, QKV});
  A.att = act({N, Hq * D});
  A.h2 = act({N, C});
  A.gu = act({N, 2 * I});
  A.act = act({N, I});
  Tensor tmp = act({N, C});
  // y (a view) += LoRA of slot s on `in`.
  auto adapt = [&](int s, const Tensor& in, const View& y) {
    const LoraAdapter* a = lora ? lora->at[size_t(l)][size_t(s)] : nullptr;
    if (a) lora_forward(*a, in, y, run.for_adapter(l * kPhi3Slots + s), &A.xa[size_t(s)]);
  };
  ops::rmsnorm(x, L.in_ln, A.h1, cfg.rms_norm_eps);
  ops::linear(A.h1, L.qkv_w, View{}, A.qkv);
  adapt(kPhi3Qkv, A.h1, A.qkv);
  ops::rope(A.qkv.cols(0, Hq * D), B, T, Hq, D, D, cos, sin);
  ops::rope(A.qkv.cols(Hq * D, Hkv * D), B, T, Hkv, D, D, cos, sin);
  ops::attention(phi3_attention(cfg, A.qkv, A.att, mask, B, T));
  ops::linear(A.att, L.o_w, View{}, tmp);
  adapt(kPhi3O, A.att, tmp);
  ops::add(x, tmp);
  if (acts) A.x_mid = x;
  ops::rmsnorm(x, L.post_ln, A.h2, cfg.rms_norm_eps);
  ops::linear(A.h2, L.gate_up_w, View{}, A.gu);
  adapt(kPhi3GateUp, A.h2, A.gu);
  ops::swiglu(A.gu, A.act);
  ops::linear(A.act, L.down_w, View{}, tmp);
  adapt(kPhi3Down, A.act, tmp);
  ops::add(x, tmp);
}

void Phi3Decoder::forward(Tensor& x, const Tensor& mask, int64_t B, int64_t T) const {
  forward(x, mask, B, T, nullptr, nullptr, LoraRun{});
}

void Phi3Decoder::forward(Tensor& x, const Tensor& mask, int64_t B, int64_t T, const Phi3DecoderLora* lora,
                          Phi3Acts* acts, const LoraRun& run) const {
  const int64_t C = cfg.hidden_size, N = B * T;
  XV_CHECK(x.numel() == N * C, "phi3 forward: x must be (B, T, C) = ({}, {}, {})", B, T, C);
  XV_CHECK(mask.numel() == N, "phi3 forward: mask must hold B*T = {}", N);
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

void Phi3Decoder::begin_acts(Phi3Acts& acts, const Tensor& mask, int64_t B, int64_t T, bool training) const {
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
  XV_CHECK(x.numel() == N * cfg.hidden_size, "phi3: final norm of {} elements, not rows of {}", x.numel(),
           cfg.hidden_size);
  ops::rmsnorm(x, norm, x, cfg.rms_norm_eps);
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
  XV_CHECK(acts.layers.size() == layers.size() && !acts.x_last.empty() && acts.x_last.numel() == N * C,
           "phi3 backward: the activations of a forward pass are missing");
  XV_CHECK(lora.at.size() == layers.size(), "phi3 backward: LoRA map has {} layers, the decoder {}", lora.at.size(),
           layers.size());
  XV_CHECK(!grads || grads->layers.size() == layers.size(),
           "phi3 backward: full gradients need Phi3Grads::zeros_like(decoder)");
  // dx: the gradient at the last layer's output (N, C), through the final norm.
  Tensor dx({N, C}, DType::F32, device);
  ops::rmsnorm_backward(acts.x_last, norm, dhidden, dx, grads ? grads->norm.view() : View{}, cfg.rms_norm_eps);
  return dx;
}

void Phi3Decoder::layer_backward(int64_t l, Phi3Acts& acts, Tensor& dx, const Phi3DecoderLora& lora,
                                 const LoraRun& run, bool need_dinput, Phi3Grads* grads) const {
  const int64_t B = acts.B, T = acts.T, N = B * T;
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, D = cfg.head_dim();
  const int64_t Hq = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads, QKV = (Hq + 2 * Hkv) * D;
  const float eps = cfg.rms_norm_eps;
  auto act = [&](Shape s) { return Tensor(std::move(s), DType::F32, device); };
  Tensor dmid = act({N, C}), dh = act({N, C}), dact = act({N, I}), dgu = act({N, 2 * I}), datt = act({N, Hq * D}),
         dqkv = act({N, QKV});
  const Phi3Layer& L = layers[size_t(l)];
  Phi3LayerActs& A = acts.layers[size_t(l)];
  Phi3LayerGrads* G = grads ? &grads->layers[size_t(l)] : nullptr;
  auto gp = [&](Tensor Phi3LayerGrads::*f) -> View { return G ? (G->*f).view() : View{}; };
  if (acts.checkpointing) {  // recompute this layer from its kept input, with the same dropout masks
    Tensor x = A.x_in;
    layer_forward(l, x, acts.mask, B, T, acts.cos, acts.sin, &lora, run, &A);
  }
  auto adapt_back = [&](int s, const Tensor& in, const View& dy, const View& din) {
    if (LoraAdapter* a = lora.at[size_t(l)][size_t(s)])
      lora_backward(*a, in, A.xa[size_t(s)], run.for_adapter(l * kPhi3Slots + s), dy, din);
  };
  // x_out = x_mid + down(act), act = swiglu(gu), gu = gate_up(h2), h2 = post_ln(x_mid)
  ops::linear_backward(A.act, L.down_w, dx, dact, gp(&Phi3LayerGrads::down_w), View{});
  adapt_back(kPhi3Down, A.act, dx, dact);
  ops::swiglu_backward(A.gu, dact, dgu);
  ops::linear_backward(A.h2, L.gate_up_w, dgu, dh, gp(&Phi3LayerGrads::gate_up_w), View{});
  adapt_back(kPhi3GateUp, A.h2, dgu, dh);
  ops::rmsnorm_backward(A.x_mid, L.post_ln, dh, dmid, gp(&Phi3LayerGrads::post_ln), eps);
  ops::add(dmid, dx);
  // x_mid = x_in + o_proj(att), att = attention(rope(q), rope(k), v), qkv = qkv_proj(h1), h1 = in_ln(x_in)
  ops::linear_backward(A.att, L.o_w, dmid, datt, gp(&Phi3LayerGrads::o_w), View{});
  adapt_back(kPhi3O, A.att, dmid, datt);
  ops::AttentionBackwardParams bp;
  bp.fwd = phi3_attention(cfg, A.qkv, View{}, acts.mask, B, T);
  bp.dout = datt;
  bp.dq = dqkv.cols(0, Hq * D), bp.dk = dqkv.cols(Hq * D, Hkv * D), bp.dv = dqkv.cols((Hq + Hkv) * D, Hkv * D);
  ops::attention_backward(bp);
  ops::rope_backward(dqkv.cols(0, Hq * D), B, T, Hq, D, D, acts.cos, acts.sin);
  ops::rope_backward(dqkv.cols(Hq * D, Hkv * D), B, T, Hkv, D, D, acts.cos, acts.sin);
  if (l == 0 && !need_dinput && !grads) {  // nothing below needs a gradient: only the adapter's own
    adapt_back(kPhi3Qkv, A.h1, dqkv, View{});
  } else {
    ops::linear_backward(A.h1, L.qkv_w, dqkv, dh, gp(&Phi3LayerGrads::qkv_w), View{});
    adapt_back(kPhi3Qkv, A.h1, dqkv, dh);
    ops::rmsnorm_backward(A.x_in, L.in_ln, dh, dx, gp(&Phi3LayerGrads::in_ln), eps);
    ops::add(dx, dmid);
  }
  if (acts.checkpointing) A = Phi3LayerActs{};  // free the recomputed activations
}

}  // namespace xv
