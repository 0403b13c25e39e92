#include "models/clip_vision.h"

#include <algorithm>
#include <cmath>

#include "core/safetensors.h"
#include "kernels/ops.h"
#include "models/grads.h"

namespace xv {

ClipVision ClipVision::from_weights(const ClipVisionConfig& cfg, int layer_idx, const WeightStore& ws,
                                    const std::string& prefix, const LoadOptions& o) {
  ClipVision m;
  m.cfg = cfg;
  m.device = o.device;
  m.layer_idx = layer_idx;
  // Read on the host in the storage dtype, then onto the device (a shape-only tensor just takes the device).
  auto on_device = [&](Tensor t) { return std::move(t).to(o.device); };
  auto raw = [&](const std::string& n, const Shape& s) { return ws.get(n, s, o.weight_dtype); };
  auto get = [&](const std::string& n, const Shape& s) { return on_device(raw(n, s)); };
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, P = cfg.patch_size;
  const std::string p = prefix + "vision_model.";
  m.patch_w = get(p + "embeddings.patch_embedding.weight", {C, cfg.num_channels, P, P});
  m.patch_w.reshape({C, cfg.num_channels * P * P});
  m.class_emb = get(p + "embeddings.class_embedding", {C});
  m.pos_emb = get(p + "embeddings.position_embedding.weight", {1 + cfg.num_patches(), C});
  m.pre_ln_g = get(p + "pre_layrnorm.weight", {C});
  m.pre_ln_b = get(p + "pre_layrnorm.bias", {C});
  // hidden_states[k] is the output of layer k-1 (hidden_states[0] = embeddings); index -2 of L+1 states
  // needs layers 0..L-2.
  const int64_t n_run = cfg.num_hidden_layers + 1 + layer_idx;
  for (int64_t l = 0; l < n_run; ++l) {
    const std::string q = p + "encoder.layers." + std::to_string(l) + ".";
    ClipLayer L;
    L.ln1_g = get(q + "layer_norm1.weight", {C});
    L.ln1_b = get(q + "layer_norm1.bias", {C});
    L.qkv_w = on_device(concat_rows({raw(q + "self_attn.q_proj.weight", {C, C}), raw(q + "self_attn.k_proj.weight", {C, C}),
                                     raw(q + "self_attn.v_proj.weight", {C, C})}));
    L.qkv_b = on_device(concat_rows({raw(q + "self_attn.q_proj.bias", {C}), raw(q + "self_attn.k_proj.bias", {C}),
                                     raw(q + "self_attn.v_proj.bias", {C})}));
    L.out_w = get(q + "self_attn.out_proj.weight", {C, C});
    L.out_b = get(q + "self_attn.out_proj.bias", {C});
    L.ln2_g = get(q + "layer_norm2.weight", {C});
    L.ln2_b = get(q + "layer_norm2.bias", {C});
    L.fc1_w = get(q + "mlp.fc1.weight", {I, C});
    L.fc1_b = get(q + "mlp.fc1.bias", {I});
    L.fc2_w = get(q + "mlp.fc2.weight", {C, I});
    L.fc2_b = get(q + "mlp.fc2.bias", {C});
    m.layers.push_back(std::move(L));
  }
  return m;
}

const char* clip_slot_module(int slot) {
  static const char* names[kClipSlots] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.out_proj", "mlp.fc1", "mlp.fc2"};
  return names[slot];
}

namespace {

// A layer's tensors in ClipLayer's field order (one walk for zeros_like, zero and the units).
template <typename L, typename F>
void each_layer_tensor(L& x, F fn) {
  for (auto* t : {&x.ln1_g, &x.ln1_b, &x.qkv_w, &x.qkv_b, &x.out_w, &x.out_b, &x.ln2_g, &x.ln2_b, &x.fc1_w, &x.fc1_b,
                  &x.fc2_w, &x.fc2_b})
    fn(*t);
}

}  // namespace

ClipGrads ClipGrads::zeros_like(const ClipVision& m) {
  ClipGrads g;
  auto z = [&](const Tensor& w) { return Tensor(w.shape(), DType::F32, m.device); };
  g.patch_w = z(m.patch_w), g.class_emb = z(m.class_emb), g.pos_emb = z(m.pos_emb);
  g.pre_ln_g = z(m.pre_ln_g), g.pre_ln_b = z(m.pre_ln_b);
  for (const ClipLayer& L : m.layers)
    g.layers.push_back(grads_like<ClipLayerGrads>(L, m.device, [](auto& x, auto fn) { each_layer_tensor(x, fn); }));
  return g;
}

void ClipGrads::zero() {
  for (Tensor* t : {&patch_w, &class_emb, &pos_emb, &pre_ln_g, &pre_ln_b}) ops::fill(*t, 0.0f);
  for (ClipLayerGrads& G : layers) each_layer_tensor(G, [](Tensor& t) { ops::fill(t, 0.0f); });
}

Tensor ClipVision::embed(const Tensor& pixels, Tensor* cols_out, Tensor* x_emb) const {
  const int64_t C = cfg.hidden_size, P = cfg.patch_size, S = cfg.image_size;
  const int64_t N = pixels.dim(0), G = S / P, NP = G * G, T = NP + 1, CH = cfg.num_channels, K = CH * P * P;
  const int64_t R = N * T;
  // im2col: patches (N*NP, CH*P*P) in the conv weight's (c, kh, kw) order, then the patch projection.
  Tensor cols({N * NP, K}, DType::F32, device);
  ops::im2col_patches(pixels, N, CH, S, P, cols);
  Tensor pe({N * NP, C}, DType::F32, device);
  ops::linear(cols, patch_w, View{}, pe);
  // x (N, T, C): [CLS, patches] + positions, then pre-LayerNorm.
  std::vector<int32_t> idx(static_cast<size_t>(R));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) idx[size_t(n * T + t)] = t == 0 ? -1 : int32_t(n * NP + t - 1);
  Tensor x({R, C}, DType::F32, device);
  ops::gather_rows(pe, class_emb.view(), Tensor::indices(idx, device), x);
  ops::add_rows(x, pos_emb);  // pos_emb has T rows: row n*T + t gets position t
  if (x_emb) *x_emb = x;
  if (cols_out) *cols_out = std::move(cols);
  ops::layernorm(x, pre_ln_g, pre_ln_b, x, cfg.layer_norm_eps);
  return x;
}

namespace {

ops::AttentionParams clip_attention(const ClipVisionConfig& cfg, const Tensor& qkv, const View& o, int64_t N, int64_t T) {
  const int64_t C = cfg.hidden_size, H = cfg.num_attention_heads, D = C / H;
  ops::AttentionParams p;
  p.q = qkv.cols(0, C), p.k = qkv.cols(C, C), p.v = qkv.cols(2 * C, C), p.o = o;
  p.B = N, p.T = T, p.Hq = H, p.Hkv = H, p.D = D;
  p.scale = 1.0f / std::sqrt(float(D));
  return p;
}

ops::Act clip_act(const ClipVisionConfig& cfg) { return cfg.hidden_act == "quick_gelu" ? ops::Act::quick_gelu : ops::Act::gelu_erf; }

}  // namespace

void ClipVision::layer_forward(int64_t l, Tensor& x, int64_t N, const ClipLora* lora, const LoraRun& run,
                               ClipLayerActs* acts) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size;
  const int64_t T = cfg.num_patches() + 1, R = N * T;
  const ClipLayer& L = layers[size_t(l)];
  auto act = [&](Shape s) { return Tensor(std::move(s), DType::F32, device); };
  ClipLayerActs local;
  ClipLayerActs& A = acts ? *acts : local;
  if (acts) A.x_in = x;
  A.h1 = act({R, C});
  A.qkv = act({R, 3 * C});
  A.att = act({R, C});
  A.h2 = act({R, C});
  A.pre = act({R, I});
  Tensor tmp = act({R, C});
  auto adapt = [&](int s, const Tensor& in, const View& y) {
    const LoraAdapter* a = lora ? lora->at[size_t(l)][size_t(s)] : nullptr;
    if (a) lora_forward(*a, in, y, run.for_adapter(l * kClipSlots + s), &A.xa[size_t(s)]);
  };
  ops::layernorm(x, L.ln1_g, L.ln1_b, A.h1, cfg.layer_norm_eps);
  ops::linear(A.h1, L.qkv_w, L.qkv_b, A.qkv);
  adapt(kClipQ, A.h1, A.qkv.cols(0, C));
  adapt(kClipK, A.h1, A.qkv.cols(C, C));
  adapt(kClipV, A.h1, A.qkv.cols(2 * C, C));
  ops::attention(clip_attention(cfg, A.qkv, A.att, N, T));
  ops::linear(A.att, L.out_w, L.out_b, tmp);
  adapt(kClipOut, A.att, tmp);
  ops::add(x, tmp);
  if (acts) A.x_mid = x;
  ops::layernorm(x, L.ln2_g, L.ln2_b, A.h2, cfg.layer_norm_eps);
  ops::linear(A.h2, L.fc1_w, L.fc1_b, A.pre);
  adapt(kClipFc1, A.h2, A.pre);
  // Training keeps the activation's input; inference applies it in place.
  Tensor* a_out = &A.pre;
  if (acts) {
    A.act = A.pre;
    a_out = &A.act;
  }
  ops::activation(clip_act(cfg), *a_out);
  ops::linear(*a_out, L.fc2_w, L.fc2_b, tmp);
  adapt(kClipFc2, *a_out, tmp);
  ops::add(x, tmp);
}

Tensor ClipVision::forward_patches(const Tensor& pixels, const ClipLora* lora, ClipActs* acts, const LoraRun& run) const {
  XV_CHECK(!lora || lora->at.size() == layers.size(), "clip forward: LoRA map has {} layers, the tower runs {}",
           lora ? lora->at.size() : 0, layers.size());
  const int64_t N = pixels.dim(0);
  const bool keep = acts && acts->full;
  Tensor x = embed(pixels, keep ? &acts->cols : nullptr, keep ? &acts->x_emb : nullptr);
  if (acts) begin_acts(*acts, N);
  for (int64_t l = 0; l < int64_t(layers.size()); ++l) {
    if (acts) layer_forward_kept(l, x, *acts, lora, run);
    else layer_forward(l, x, N, lora, run, nullptr);
  }
  return drop_cls(x, N);
}

void ClipVision::begin_acts(ClipActs& acts, int64_t N) const {
  acts.N = N;
  acts.layers.assign(layers.size(), {});
}

void ClipVision::layer_forward_kept(int64_t l, Tensor& x, ClipActs& acts, const ClipLora* lora,
                                   const LoraRun& run) const {
  if (!acts.checkpointing) return layer_forward(l, x, acts.N, lora, run, &acts.layers[size_t(l)]);
  acts.layers[size_t(l)].x_in = x;  // the only thing kept
  ClipLayerActs scratch;
  layer_forward(l, x, acts.N, lora, run, &scratch);
}

namespace {

// Rows n*T + 1 + g of the tower's (N*T, C) states: the patches without each crop's CLS row.
Tensor patch_rows(int64_t N, int64_t NP, Device d) {
  std::vector<int32_t> idx(static_cast<size_t>(N * NP));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < NP; ++g) idx[size_t(n * NP + g)] = int32_t(n * (NP + 1) + 1 + g);
  return Tensor::indices(idx, d);
}

}  // namespace

Tensor ClipVision::drop_cls(const Tensor& x, int64_t N) const {
  const int64_t C = cfg.hidden_size, NP = cfg.num_patches();
  Tensor out({N, NP, C}, DType::F32, device);
  ops::gather_rows(x, View{}, patch_rows(N, NP, device), out);
  return out;
}

void ClipVision::backward(ClipActs& acts, const Tensor& dpatches, const ClipLora& lora, const LoraRun& run,
                          ClipGrads* grads) const {
  Tensor dx = backward_begin(acts, dpatches, lora, grads);
  for (int64_t l = int64_t(layers.size()) - 1; l >= 0; --l) layer_backward(l, acts, dx, lora, run, grads);
  if (grads) embeddings_backward(acts, dx, *grads);
}

Tensor ClipVision::backward_begin(const ClipActs& acts, const Tensor& dpatches, const ClipLora& lora,
                                  const ClipGrads* grads) const {
  const int64_t C = cfg.hidden_size, NP = cfg.num_patches(), T = NP + 1;
  const int64_t N = acts.N, R = N * T;
  XV_CHECK(dpatches.numel() == N * NP * C, "clip backward: dpatches must be (N, {}, {}) with N = {}", NP, C, N);
  XV_CHECK(acts.layers.size() == layers.size(), "clip backward: the activations of a forward pass are missing");
  XV_CHECK(lora.at.size() == layers.size(), "clip backward: LoRA map has {} layers, the tower runs {}", lora.at.size(),
           layers.size());
  if (grads)
    XV_CHECK(grads->layers.size() == layers.size() && !acts.x_emb.empty() && acts.x_emb.numel() == R * C,
             "clip backward: full gradients need ClipGrads::zeros_like(tower) and a forward with ClipActs::full");
  // dx (R, C): the gradient at the last layer's output; the CLS rows of the output get none.
  Tensor dx({R, C}, DType::F32, device);
  ops::copy_rows(dpatches, patch_rows(N, NP, device), dx);
  return dx;
}

void ClipVision::layer_backward(int64_t l, ClipActs& acts, Tensor& dx, const ClipLora& lora, const LoraRun& run,
                                ClipGrads* grads) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, T = cfg.num_patches() + 1;
  const int64_t N = acts.N, R = N * T;
  const float eps = cfg.layer_norm_eps;
  auto act = [&](Shape s) { return Tensor(std::move(s), DType::F32, device); };
  Tensor dmid = act({R, C}), dh = act({R, C}), dpre = act({R, I}), datt = act({R, C}), dqkv = act({R, 3 * C});
  const ClipLayer& L = layers[size_t(l)];
  ClipLayerActs& A = acts.layers[size_t(l)];
  ClipLayerGrads* G = grads ? &grads->layers[size_t(l)] : nullptr;
  auto gp = [&](Tensor ClipLayerGrads::*f) -> View { return G ? (G->*f).view() : View{}; };
  if (acts.checkpointing) {  // recompute this layer from its kept input, with the same dropout masks
    Tensor x = A.x_in;
    layer_forward(l, x, N, &lora, run, &A);
  }
  auto adapt_back = [&](int s, const Tensor& in, const View& dy, const View& din) {
    if (LoraAdapter* a = lora.at[size_t(l)][size_t(s)])
      lora_backward(*a, in, A.xa[size_t(s)], run.for_adapter(l * kClipSlots + s), dy, din);
  };
  // x_out = x_mid + fc2(act), act = f(pre), pre = fc1(h2), h2 = ln2(x_mid)
  ops::linear_backward(A.act, L.fc2_w, dx, dpre, gp(&ClipLayerGrads::fc2_w), gp(&ClipLayerGrads::fc2_b));
  adapt_back(kClipFc2, A.act, dx, dpre);
  ops::activation_backward(clip_act(cfg), A.pre, dpre, dpre);
  ops::linear_backward(A.h2, L.fc1_w, dpre, dh, gp(&ClipLayerGrads::fc1_w), gp(&ClipLayerGrads::fc1_b));
  adapt_back(kClipFc1, A.h2, dpre, dh);
  ops::layernorm_backward(A.x_mid, L.ln2_g, dh, dmid, gp(&ClipLayerGrads::ln2_g), gp(&ClipLayerGrads::ln2_b), eps);
  ops::add(dmid, dx);
  // x_mid = x_in + out_proj(att), att = attention(q, k, v), qkv = proj(h1), h1 = ln1(x_in)
  ops::linear_backward(A.att, L.out_w, dmid, datt, gp(&ClipLayerGrads::out_w), gp(&ClipLayerGrads::out_b));
  adapt_back(kClipOut, A.att, dmid, datt);
  ops::AttentionBackwardParams bp;
  bp.fwd = clip_attention(cfg, A.qkv, View{}, N, T);
  bp.dout = datt;
  bp.dq = dqkv.cols(0, C), bp.dk = dqkv.cols(C, C), bp.dv = dqkv.cols(2 * C, C);
  ops::attention_backward(bp);
  if (l == 0 && !grads) {  // the embeddings are frozen: only the adapters' own gradients are left
    adapt_back(kClipQ, A.h1, dqkv.cols(0, C), View{});
    adapt_back(kClipK, A.h1, dqkv.cols(C, C), View{});
    adapt_back(kClipV, A.h1, dqkv.cols(2 * C, C), View{});
  } else {
    ops::linear_backward(A.h1, L.qkv_w, dqkv, dh, gp(&ClipLayerGrads::qkv_w), gp(&ClipLayerGrads::qkv_b));
    adapt_back(kClipQ, A.h1, dqkv.cols(0, C), dh);
    adapt_back(kClipK, A.h1, dqkv.cols(C, C), dh);
    adapt_back(kClipV, A.h1, dqkv.cols(2 * C, C), dh);
    ops::layernorm_backward(A.x_in, L.ln1_g, dh, dx, gp(&ClipLayerGrads::ln1_g), gp(&ClipLayerGrads::ln1_b), eps);
    ops::add(dx, dmid);
  }
  if (acts.checkpointing) A = ClipLayerActs{};  // free the recomputed activations
}

void ClipVision::embeddings_backward(const ClipActs& acts, const Tensor& dx, ClipGrads& grads) const {
  // dx is the gradient at the embeddings' output (after pre_layrnorm): through it, then into the class and
  // position embeddings (summed over crops, in crop order) and the patch projection.
  const int64_t C = cfg.hidden_size, NP = cfg.num_patches(), T = NP + 1;
  const int64_t N = acts.N, R = N * T;
  Tensor de({R, C}, DType::F32, device);
  ops::layernorm_backward(acts.x_emb, pre_ln_g, dx, de, grads.pre_ln_g, grads.pre_ln_b, cfg.layer_norm_eps);
  std::vector<int32_t> pos(static_cast<size_t>(R)), cls(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    pos[size_t(r)] = int32_t(r % T);
    cls[size_t(r)] = r % T == 0 ? 0 : -1;  // -1: not a CLS row, skipped (no second table)
  }
  ops::scatter_add_rows(de, Tensor::indices(pos, device), grads.pos_emb, View{});
  ops::scatter_add_rows(de, Tensor::indices(cls, device), grads.class_emb.view(), View{});
  Tensor dpe({N * NP, C}, DType::F32, device);
  ops::gather_rows(de, View{}, patch_rows(N, NP, device), dpe);
  ops::linear_backward(acts.cols, patch_w, dpe, View{}, grads.patch_w, View{});
}

}  // namespace xv
