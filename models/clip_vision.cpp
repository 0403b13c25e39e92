#include "models/clip_vision.h"

#include <algorithm>
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

const char* clip_slot_module(int slot) {
  static const char* names[kClipSlots] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.out_proj", "mlp.fc1", "mlp.fc2"};
  return names[slot];
}

ClipGrads ClipGrads::zeros_like(const ClipVision& m) {
  ClipGrads g;
  g.patch_w = Tensor(m.patch_w.shape), g.class_emb = Tensor(m.class_emb.shape), g.pos_emb = Tensor(m.pos_emb.shape);
  g.pre_ln_g = Tensor(m.pre_ln_g.shape), g.pre_ln_b = Tensor(m.pre_ln_b.shape);
  for (const ClipLayer& L : m.layers) {
    ClipLayerGrads G;
    G.ln1_g = Tensor(L.ln1_g.shape), G.ln1_b = Tensor(L.ln1_b.shape);
    G.qkv_w = Tensor(L.qkv_w.shape), G.qkv_b = Tensor(L.qkv_b.shape);
    G.out_w = Tensor(L.out_w.shape), G.out_b = Tensor(L.out_b.shape);
    G.ln2_g = Tensor(L.ln2_g.shape), G.ln2_b = Tensor(L.ln2_b.shape);
    G.fc1_w = Tensor(L.fc1_w.shape), G.fc1_b = Tensor(L.fc1_b.shape);
    G.fc2_w = Tensor(L.fc2_w.shape), G.fc2_b = Tensor(L.fc2_b.shape);
    g.layers.push_back(std::move(G));
  }
  return g;
}

void ClipGrads::zero() {
  auto z = [](Tensor& t) { std::fill(t.data.begin(), t.data.end(), 0.0f); };
  z(patch_w), z(class_emb), z(pos_emb), z(pre_ln_g), z(pre_ln_b);
  for (ClipLayerGrads& G : layers)
    for (Tensor* t : {&G.ln1_g, &G.ln1_b, &G.qkv_w, &G.qkv_b, &G.out_w, &G.out_b, &G.ln2_g, &G.ln2_b, &G.fc1_w,
                      &G.fc1_b, &G.fc2_w, &G.fc2_b})
      z(*t);
}

Tensor ClipVision::embed(const float* pixels, int64_t N, Tensor* cols_out, Tensor* x_emb) const {
  const int64_t C = cfg.hidden_size, P = cfg.patch_size, S = cfg.image_size;
  const int64_t G = S / P, NP = G * G, T = NP + 1, CH = cfg.num_channels, K = CH * P * P, R = N * T;
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
  if (x_emb) *x_emb = x;
  if (cols_out) *cols_out = std::move(cols);
  ops::layernorm(x.ptr(), pre_ln_g.ptr(), pre_ln_b.ptr(), x.ptr(), R, C, cfg.layer_norm_eps);
  return x;
}

namespace {

ops::AttentionParams clip_attention(const ClipVisionConfig& cfg, const float* qkv, float* o, int64_t N, int64_t T) {
  const int64_t C = cfg.hidden_size, H = cfg.num_attention_heads, D = C / H;
  ops::AttentionParams p;
  p.q = qkv, p.k = qkv + C, p.v = qkv + 2 * C, p.o = o;
  p.q_stride = p.k_stride = p.v_stride = 3 * C, p.o_stride = C;
  p.B = N, p.T = T, p.Hq = H, p.Hkv = H, p.D = D;
  p.scale = 1.0f / std::sqrt(float(D));
  return p;
}

}  // namespace

void ClipVision::layer_forward(int64_t l, Tensor& x, int64_t N, const ClipLora* lora, const LoraRun& run,
                               ClipLayerActs* acts) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size;
  const int64_t T = cfg.num_patches() + 1, R = N * T;
  const ClipLayer& L = layers[size_t(l)];
  ClipLayerActs local;
  ClipLayerActs& A = acts ? *acts : local;
  if (acts) A.x_in = x;
  A.h1 = Tensor({R, C});
  A.qkv = Tensor({R, 3 * C});
  A.att = Tensor({R, C});
  A.h2 = Tensor({R, C});
  A.pre = Tensor({R, I});
  Tensor tmp({R, C});
  auto adapt = [&](int s, const float* in, float* y, int64_t y_stride) {
    const LoraAdapter* a = lora ? lora->at[size_t(l)][size_t(s)] : nullptr;
    if (a) lora_forward(*a, in, R, y, y_stride, run.for_adapter(l * kClipSlots + s), &A.xa[size_t(s)], &A.xd[size_t(s)]);
  };
  ops::layernorm(x.ptr(), L.ln1_g.ptr(), L.ln1_b.ptr(), A.h1.ptr(), R, C, cfg.layer_norm_eps);
  ops::linear(A.h1.ptr(), L.qkv_w.ptr(), L.qkv_b.ptr(), A.qkv.ptr(), R, C, 3 * C);
  adapt(kClipQ, A.h1.ptr(), A.qkv.ptr(), 3 * C);
  adapt(kClipK, A.h1.ptr(), A.qkv.ptr() + C, 3 * C);
  adapt(kClipV, A.h1.ptr(), A.qkv.ptr() + 2 * C, 3 * C);
  ops::attention(clip_attention(cfg, A.qkv.ptr(), A.att.ptr(), N, T));
  ops::linear(A.att.ptr(), L.out_w.ptr(), L.out_b.ptr(), tmp.ptr(), R, C, C);
  adapt(kClipOut, A.att.ptr(), tmp.ptr(), C);
  ops::add_inplace(x.ptr(), tmp.ptr(), R * C);
  if (acts) A.x_mid = x;
  ops::layernorm(x.ptr(), L.ln2_g.ptr(), L.ln2_b.ptr(), A.h2.ptr(), R, C, cfg.layer_norm_eps);
  ops::linear(A.h2.ptr(), L.fc1_w.ptr(), L.fc1_b.ptr(), A.pre.ptr(), R, C, I);
  adapt(kClipFc1, A.h2.ptr(), A.pre.ptr(), I);
  // Training keeps the activation's input; inference applies it in place.
  Tensor* act = &A.pre;
  if (acts) {
    A.act = A.pre;
    act = &A.act;
  }
  if (cfg.hidden_act == "quick_gelu") ops::quick_gelu(act->ptr(), R * I);
  else ops::gelu_erf(act->ptr(), R * I);
  ops::linear(act->ptr(), L.fc2_w.ptr(), L.fc2_b.ptr(), tmp.ptr(), R, I, C);
  adapt(kClipFc2, act->ptr(), tmp.ptr(), C);
  ops::add_inplace(x.ptr(), tmp.ptr(), R * C);
}

Tensor ClipVision::forward_patches(const float* pixels, int64_t N) const {
  return forward_patches(pixels, N, nullptr, nullptr, LoraRun{});
}

Tensor ClipVision::forward_patches(const float* pixels, int64_t N, const ClipLora* lora, ClipActs* acts,
                                   const LoraRun& run) const {
  XV_CHECK(!lora || lora->at.size() == layers.size(), "clip forward: LoRA map has {} layers, the tower runs {}",
           lora ? lora->at.size() : 0, layers.size());
  const bool keep = acts && acts->full;
  Tensor x = embed(pixels, N, keep ? &acts->cols : nullptr, keep ? &acts->x_emb : nullptr);
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

Tensor ClipVision::drop_cls(const Tensor& x, int64_t N) const {
  const int64_t C = cfg.hidden_size, NP = cfg.num_patches(), T = NP + 1;
  Tensor out({N, NP, C});
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    std::copy(x.ptr() + (n * T + 1) * C, x.ptr() + (n * T + T) * C, out.ptr() + n * NP * C);
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
    XV_CHECK(grads->layers.size() == layers.size() && acts.x_emb.numel() == R * C,
             "clip backward: full gradients need ClipGrads::zeros_like(tower) and a forward with ClipActs::full");
  // dx (R, C): the gradient at the last layer's output; the CLS rows of the output get none.
  Tensor dx({R, C});
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    std::copy(dpatches.ptr() + n * NP * C, dpatches.ptr() + (n + 1) * NP * C, dx.ptr() + (n * T + 1) * C);
  return dx;
}

void ClipVision::layer_backward(int64_t l, ClipActs& acts, Tensor& dx, const ClipLora& lora, const LoraRun& run,
                                ClipGrads* grads) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, T = cfg.num_patches() + 1;
  const int64_t N = acts.N, R = N * T;
  const float eps = cfg.layer_norm_eps;
  const bool quick = cfg.hidden_act == "quick_gelu";
  Tensor dmid({R, C}), dh({R, C}), dpre({R, I}), datt({R, C}), dqkv({R, 3 * C});
  const ClipLayer& L = layers[size_t(l)];
  ClipLayerActs& A = acts.layers[size_t(l)];
  ClipLayerGrads* G = grads ? &grads->layers[size_t(l)] : nullptr;
  auto gp = [&](Tensor ClipLayerGrads::*f) -> float* { return G ? (G->*f).ptr() : nullptr; };
  if (acts.checkpointing) {  // recompute this layer from its kept input, with the same dropout masks
    Tensor x = A.x_in;
    layer_forward(l, x, N, &lora, run, &A);
  }
  auto adapt_back = [&](int s, const Tensor& in, const float* dy, int64_t dy_stride, float* din) {
    if (LoraAdapter* a = lora.at[size_t(l)][size_t(s)])
      lora_backward(*a, in.ptr(), A.xa[size_t(s)].ptr(), A.xd[size_t(s)], run.for_adapter(l * kClipSlots + s), dy,
                    dy_stride, R, din);
  };
  // x_out = x_mid + fc2(act), act = f(pre), pre = fc1(h2), h2 = ln2(x_mid)
  ops::linear_backward(A.act.ptr(), L.fc2_w.ptr(), dx.ptr(), dpre.ptr(), gp(&ClipLayerGrads::fc2_w),
                       gp(&ClipLayerGrads::fc2_b), R, I, C);
  adapt_back(kClipFc2, A.act, dx.ptr(), C, dpre.ptr());
  if (quick) ops::quick_gelu_backward(A.pre.ptr(), dpre.ptr(), dpre.ptr(), R * I);
  else ops::gelu_erf_backward(A.pre.ptr(), dpre.ptr(), dpre.ptr(), R * I);
  ops::linear_backward(A.h2.ptr(), L.fc1_w.ptr(), dpre.ptr(), dh.ptr(), gp(&ClipLayerGrads::fc1_w),
                       gp(&ClipLayerGrads::fc1_b), R, C, I);
  adapt_back(kClipFc1, A.h2, dpre.ptr(), I, dh.ptr());
  ops::layernorm_backward(A.x_mid.ptr(), L.ln2_g.ptr(), dh.ptr(), dmid.ptr(), gp(&ClipLayerGrads::ln2_g),
                          gp(&ClipLayerGrads::ln2_b), R, C, eps);
  ops::add_inplace(dmid.ptr(), dx.ptr(), R * C);
  // x_mid = x_in + out_proj(att), att = attention(q, k, v), qkv = proj(h1), h1 = ln1(x_in)
  ops::linear_backward(A.att.ptr(), L.out_w.ptr(), dmid.ptr(), datt.ptr(), gp(&ClipLayerGrads::out_w),
                       gp(&ClipLayerGrads::out_b), R, C, C);
  adapt_back(kClipOut, A.att, dmid.ptr(), C, datt.ptr());
  ops::AttentionBackwardParams bp;
  bp.fwd = clip_attention(cfg, A.qkv.ptr(), nullptr, N, T);
  bp.dout = datt.ptr(), bp.dout_stride = C;
  bp.dq = dqkv.ptr(), bp.dk = dqkv.ptr() + C, bp.dv = dqkv.ptr() + 2 * C;
  bp.dq_stride = bp.dk_stride = bp.dv_stride = 3 * C;
  ops::attention_backward(bp);
  if (l == 0 && !grads) {  // the embeddings are frozen: only the adapters' own gradients are left
    adapt_back(kClipQ, A.h1, dqkv.ptr(), 3 * C, nullptr);
    adapt_back(kClipK, A.h1, dqkv.ptr() + C, 3 * C, nullptr);
    adapt_back(kClipV, A.h1, dqkv.ptr() + 2 * C, 3 * C, nullptr);
  } else {
    ops::linear_backward(A.h1.ptr(), L.qkv_w.ptr(), dqkv.ptr(), dh.ptr(), gp(&ClipLayerGrads::qkv_w),
                         gp(&ClipLayerGrads::qkv_b), R, C, 3 * C);
    adapt_back(kClipQ, A.h1, dqkv.ptr(), 3 * C, dh.ptr());
    adapt_back(kClipK, A.h1, dqkv.ptr() + C, 3 * C, dh.ptr());
    adapt_back(kClipV, A.h1, dqkv.ptr() + 2 * C, 3 * C, dh.ptr());
    ops::layernorm_backward(A.x_in.ptr(), L.ln1_g.ptr(), dh.ptr(), dx.ptr(), gp(&ClipLayerGrads::ln1_g),
                            gp(&ClipLayerGrads::ln1_b), R, C, eps);
    ops::add_inplace(dx.ptr(), dmid.ptr(), R * C);
  }
  if (acts.checkpointing) A = ClipLayerActs{};  // free the recomputed activations
}

void ClipVision::embeddings_backward(const ClipActs& acts, const Tensor& dx, ClipGrads& grads) const {
  // dx is the gradient at the embeddings' output (after pre_layrnorm): through it, then into the class and
  // position embeddings (summed over crops, in crop order) and the patch projection.
  const int64_t C = cfg.hidden_size, NP = cfg.num_patches(), T = NP + 1;
  const int64_t N = acts.N, R = N * T;
  const int64_t P = cfg.patch_size, K = cfg.num_channels * P * P;
  Tensor de({R, C});
  ops::layernorm_backward(acts.x_emb.ptr(), pre_ln_g.ptr(), dx.ptr(), de.ptr(), grads.pre_ln_g.ptr(),
                          grads.pre_ln_b.ptr(), R, C, cfg.layer_norm_eps);
  Tensor dpe({N * NP, C});
  float* dpos = grads.pos_emb.ptr();
  float* dcls = grads.class_emb.ptr();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const float* src = de.ptr() + (n * T + t) * C;
      float* pos = dpos + t * C;
      for (int64_t c = 0; c < C; ++c) pos[c] += src[c];
      if (t == 0) {
        for (int64_t c = 0; c < C; ++c) dcls[c] += src[c];
      } else {
        std::copy(src, src + C, dpe.ptr() + (n * NP + t - 1) * C);
      }
    }
  ops::linear_backward(acts.cols.ptr(), patch_w.ptr(), dpe.ptr(), nullptr, grads.patch_w.ptr(), nullptr, N * NP, K,
                       C);
}

}  // namespace xv
