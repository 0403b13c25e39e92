#include "models/bert.h"

#include <algorithm>
#include <cmath>

#include "core/safetensors.h"
#include "kernels/ops.h"

namespace xv {

BertModel BertModel::load(const std::string& model_dir, bool shapes_only) {
  BertConfig cfg = load_bert_config(model_dir);
  WeightStore ws = WeightStore::open_dir(model_dir);
  ws.set_shapes_only(shapes_only);
  return from_weights(cfg, ws);
}

BertModel BertModel::from_weights(const BertConfig& cfg, const WeightStore& ws) {
  BertModel m;
  m.cfg = cfg;
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size;
  const std::string pre = ws.has("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  auto get = [&](const std::string& n, const Shape& s) { return ws.get(pre + n, s); };
  m.word_emb = get("embeddings.word_embeddings.weight", {cfg.vocab_size, C});
  m.pos_emb = get("embeddings.position_embeddings.weight", {cfg.max_position_embeddings, C});
  m.type_emb = get("embeddings.token_type_embeddings.weight", {cfg.type_vocab_size, C});
  m.emb_ln_g = get("embeddings.LayerNorm.weight", {C});
  m.emb_ln_b = get("embeddings.LayerNorm.bias", {C});
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    BertLayer L;
    L.qkv_w = concat_rows({get(p + "attention.self.query.weight", {C, C}), get(p + "attention.self.key.weight", {C, C}),
                    get(p + "attention.self.value.weight", {C, C})});
    L.qkv_b = concat_rows({get(p + "attention.self.query.bias", {C}), get(p + "attention.self.key.bias", {C}),
                    get(p + "attention.self.value.bias", {C})});
    L.ao_w = get(p + "attention.output.dense.weight", {C, C});
    L.ao_b = get(p + "attention.output.dense.bias", {C});
    L.ln1_g = get(p + "attention.output.LayerNorm.weight", {C});
    L.ln1_b = get(p + "attention.output.LayerNorm.bias", {C});
    L.i_w = get(p + "intermediate.dense.weight", {I, C});
    L.i_b = get(p + "intermediate.dense.bias", {I});
    L.o_w = get(p + "output.dense.weight", {C, I});
    L.o_b = get(p + "output.dense.bias", {C});
    L.ln2_g = get(p + "output.LayerNorm.weight", {C});
    L.ln2_b = get(p + "output.LayerNorm.bias", {C});
    m.layers.push_back(std::move(L));
  }
  return m;
}

const char* bert_slot_module(int slot) {
  static const char* names[kBertSlots] = {"attention.self.query", "attention.self.key",  "attention.self.value",
                                          "attention.output.dense", "intermediate.dense", "output.dense"};
  return names[slot];
}

BertLora BertLora::create(const BertModel& m, const LoraConfig& cfg, uint64_t seed) {
  BertLora l;
  const int64_t C = m.cfg.hidden_size, I = m.cfg.intermediate_size;
  const int64_t in[kBertSlots] = {C, C, C, C, C, I}, out[kBertSlots] = {C, C, C, C, I, C};
  for (int64_t layer = 0; layer < int64_t(m.layers.size()); ++layer) {
    std::array<int, kBertSlots> idx;
    for (int s = 0; s < kBertSlots; ++s) {
      const std::string path = "encoder.layer." + std::to_string(layer) + "." + bert_slot_module(s);
      idx[size_t(s)] = -1;
      if (!cfg.targets_module(path)) continue;
      idx[size_t(s)] = int(l.adapters.size());
      l.adapters.push_back(make_lora(path, in[s], out[s], cfg, seed + 1000003ull * l.adapters.size()));
    }
    l.slot.push_back(idx);
  }
  XV_CHECK(!l.adapters.empty(), "lora: target_modules match no Linear layer of the bert model");
  return l;
}

void BertLora::zero_grad() {
  for (auto& a : adapters) a.zero_grad();
}

BertGrads BertGrads::zeros_like(const BertModel& m) {
  BertGrads g;
  g.word_emb = Tensor(m.word_emb.shape);
  g.pos_emb = Tensor(m.pos_emb.shape);
  g.type_emb = Tensor(m.type_emb.shape);
  g.emb_ln_g = Tensor(m.emb_ln_g.shape);
  g.emb_ln_b = Tensor(m.emb_ln_b.shape);
  for (const BertLayer& L : m.layers) {
    BertLayerGrads G;
    G.qkv_w = Tensor(L.qkv_w.shape), G.qkv_b = Tensor(L.qkv_b.shape);
    G.ao_w = Tensor(L.ao_w.shape), G.ao_b = Tensor(L.ao_b.shape);
    G.ln1_g = Tensor(L.ln1_g.shape), G.ln1_b = Tensor(L.ln1_b.shape);
    G.i_w = Tensor(L.i_w.shape), G.i_b = Tensor(L.i_b.shape);
    G.o_w = Tensor(L.o_w.shape), G.o_b = Tensor(L.o_b.shape);
    G.ln2_g = Tensor(L.ln2_g.shape), G.ln2_b = Tensor(L.ln2_b.shape);
    g.layers.push_back(std::move(G));
  }
  return g;
}

void BertGrads::zero() {
  auto z = [](Tensor& t) { std::fill(t.data.begin(), t.data.end(), 0.0f); };
  z(word_emb), z(pos_emb), z(type_emb), z(emb_ln_g), z(emb_ln_b);
  for (BertLayerGrads& G : layers)
    for (Tensor* t : {&G.qkv_w, &G.qkv_b, &G.ao_w, &G.ao_b, &G.ln1_g, &G.ln1_b, &G.i_w, &G.i_b, &G.o_w, &G.o_b,
                      &G.ln2_g, &G.ln2_b})
      z(*t);
}

Tensor BertModel::embed_sum(const std::vector<int32_t>& ids, int64_t B, int64_t T) const {
  const int64_t C = cfg.hidden_size, N = B * T;
  XV_CHECK(int64_t(ids.size()) == N, "bert forward: ids must hold B*T = {}", N);
  XV_CHECK(T <= cfg.max_position_embeddings, "bert forward: sequence length {} exceeds max_position_embeddings {}",
           T, cfg.max_position_embeddings);
  for (int32_t id : ids)
    XV_CHECK(id >= 0 && id < cfg.vocab_size, "bert forward: token id {} outside the vocabulary [0, {})", id,
             cfg.vocab_size);
  // word + position + token_type 0 (embed() then applies the LayerNorm).
  Tensor x({N, C});
  ops::embedding(ids.data(), word_emb.ptr(), x.ptr(), N, C);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* pe = pos_emb.ptr() + (r % T) * C;
    const float* te = type_emb.ptr();
    float* xr = x.ptr() + r * C;
    for (int64_t c = 0; c < C; ++c) xr[c] = (xr[c] + te[c]) + pe[c];  // HF order: (word + type) + position
  }
  return x;
}

Tensor BertModel::embed(const std::vector<int32_t>& ids, int64_t B, int64_t T) const {
  Tensor x = embed_sum(ids, B, T);
  const int64_t N = B * T, C = cfg.hidden_size;
  ops::layernorm(x.ptr(), emb_ln_g.ptr(), emb_ln_b.ptr(), x.ptr(), N, C, cfg.layer_norm_eps);
  return x;
}

namespace {

ops::AttentionParams bert_attention(const float* qkv, float* o, const std::vector<float>& mask, int64_t B, int64_t T,
                                    int64_t C, int64_t H) {
  ops::AttentionParams p;
  p.q = qkv, p.k = qkv + C, p.v = qkv + 2 * C, p.o = o;
  p.q_stride = p.k_stride = p.v_stride = 3 * C, p.o_stride = C;
  p.B = B, p.T = T, p.Hq = H, p.Hkv = H, p.D = C / H;
  p.key_mask = mask.data();
  p.causal = false;
  p.scale = 1.0f / std::sqrt(float(C / H));
  return p;
}

}  // namespace

void BertModel::layer_forward(int64_t l, Tensor& x, const std::vector<float>& mask, int64_t B, int64_t T,
                              const BertLora* lora, const LoraRun& run, BertLayerActs* acts) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, H = cfg.num_attention_heads, N = B * T;
  const BertLayer& L = layers[size_t(l)];
  // Without acts (inference, the teacher) x itself is the layer input: it is only overwritten at the end.
  BertLayerActs local;
  BertLayerActs& A = acts ? *acts : local;
  if (acts) A.x_in = x;
  const Tensor& xin = acts ? A.x_in : x;
  A.qkv = Tensor({N, 3 * C});
  A.att = Tensor({N, C});
  A.h1 = Tensor({N, C});
  A.x1 = Tensor({N, C});
  A.inter_pre = Tensor({N, I});
  A.h2 = Tensor({N, C});
  // Applies adapter `s` of this layer: y (rows y_stride apart) += LoRA(in).
  auto adapt = [&](int s, const float* in, float* y, int64_t y_stride) {
    const LoraAdapter* a = lora ? lora->at(l, s) : nullptr;
    if (!a) return;
    lora_forward(*a, in, N, y, y_stride, run.for_adapter(l * kBertSlots + s), &A.xa[size_t(s)], &A.xd[size_t(s)]);
  };
  ops::linear(xin.ptr(), L.qkv_w.ptr(), L.qkv_b.ptr(), A.qkv.ptr(), N, C, 3 * C);
  adapt(kQuery, xin.ptr(), A.qkv.ptr(), 3 * C);
  adapt(kKey, xin.ptr(), A.qkv.ptr() + C, 3 * C);
  adapt(kValue, xin.ptr(), A.qkv.ptr() + 2 * C, 3 * C);
  ops::attention(bert_attention(A.qkv.ptr(), A.att.ptr(), mask, B, T, C, H));
  ops::linear(A.att.ptr(), L.ao_w.ptr(), L.ao_b.ptr(), A.h1.ptr(), N, C, C);
  adapt(kAttnOut, A.att.ptr(), A.h1.ptr(), C);
  ops::add_inplace(A.h1.ptr(), xin.ptr(), N * C);
  ops::layernorm(A.h1.ptr(), L.ln1_g.ptr(), L.ln1_b.ptr(), A.x1.ptr(), N, C, cfg.layer_norm_eps);
  ops::linear(A.x1.ptr(), L.i_w.ptr(), L.i_b.ptr(), A.inter_pre.ptr(), N, C, I);
  adapt(kInter, A.x1.ptr(), A.inter_pre.ptr(), I);
  A.inter = A.inter_pre;
  if (cfg.hidden_act != "gelu") ops::gelu_tanh(A.inter.ptr(), N * I);
  else ops::gelu_erf(A.inter.ptr(), N * I);
  ops::linear(A.inter.ptr(), L.o_w.ptr(), L.o_b.ptr(), A.h2.ptr(), N, I, C);
  adapt(kOut, A.inter.ptr(), A.h2.ptr(), C);
  ops::add_inplace(A.h2.ptr(), A.x1.ptr(), N * C);
  ops::layernorm(A.h2.ptr(), L.ln2_g.ptr(), L.ln2_b.ptr(), x.ptr(), N, C, cfg.layer_norm_eps);
}

Tensor BertModel::forward(const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B, int64_t T,
                          const BertLora* lora) const {
  XV_CHECK(int64_t(mask.size()) == B * T, "bert forward: mask must hold B*T = {}", B * T);
  Tensor x = embed(ids, B, T);
  for (int64_t l = 0; l < int64_t(layers.size()); ++l) layer_forward(l, x, mask, B, T, lora, {}, nullptr);
  x.reshape({B, T, cfg.hidden_size});
  return x;
}

void BertModel::begin_acts(BertActs& acts, const std::vector<int32_t>& ids, const std::vector<float>& mask,
                           int64_t B, int64_t T) const {
  XV_CHECK(int64_t(mask.size()) == B * T && int64_t(ids.size()) == B * T, "bert forward: ids and mask must hold "
           "B*T = {}", B * T);
  acts.B = B, acts.T = T, acts.mask = mask, acts.ids = ids;
  acts.layers.assign(layers.size(), {});
}

void BertModel::layer_forward_kept(int64_t l, Tensor& x, BertActs& acts, const BertLora* lora,
                                   const LoraRun& run) const {
  BertLayerActs keep_input;
  BertLayerActs* la = acts.checkpointing ? &keep_input : &acts.layers[size_t(l)];
  if (acts.checkpointing) acts.layers[size_t(l)].x_in = x;  // the only thing kept
  layer_forward(l, x, acts.mask, acts.B, acts.T, lora, run, la);
}

void BertModel::layer_backward(int64_t l, BertActs& acts, Tensor& dx, BertLora& lora, const LoraRun& run,
                               BertGrads* grads) const {
  const int64_t B = acts.B, T = acts.T, N = B * T;
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, H = cfg.num_attention_heads;
  Tensor dh({N, C}), dx1({N, C}), dinter({N, I}), datt({N, C}), dqkv({N, 3 * C});
  const bool tanh_gelu = cfg.hidden_act != "gelu";
  const BertLayer& L = layers[size_t(l)];
  BertLayerGrads* G = grads ? &grads->layers[size_t(l)] : nullptr;
  // The parameter gradients of this layer (null: frozen, the LoRA path).
  auto gp = [&](Tensor BertLayerGrads::*f) -> float* { return G ? (G->*f).ptr() : nullptr; };
  BertLayerActs& A = acts.layers[size_t(l)];
  if (acts.checkpointing) {  // recompute this layer from its kept input
    Tensor x = A.x_in;
    layer_forward(l, x, acts.mask, B, T, &lora, run, &A);
  }
  auto adapt_back = [&](int s, const Tensor& in, const float* dy, int64_t dy_stride, float* din) {
    if (LoraAdapter* a = lora.at(l, s))
      lora_backward(*a, in.ptr(), A.xa[size_t(s)].ptr(), A.xd[size_t(s)], run.for_adapter(l * kBertSlots + s), dy,
                    dy_stride, N, din);
  };
  // x_out = LN2(h2), h2 = output.dense(inter) + x1
  ops::layernorm_backward(A.h2.ptr(), L.ln2_g.ptr(), dx.ptr(), dh.ptr(), gp(&BertLayerGrads::ln2_g),
                          gp(&BertLayerGrads::ln2_b), N, C, cfg.layer_norm_eps);
  ops::linear_backward(A.inter.ptr(), L.o_w.ptr(), dh.ptr(), dinter.ptr(), gp(&BertLayerGrads::o_w),
                       gp(&BertLayerGrads::o_b), N, I, C);
  adapt_back(kOut, A.inter, dh.ptr(), C, dinter.ptr());
  if (tanh_gelu) ops::gelu_tanh_backward(A.inter_pre.ptr(), dinter.ptr(), dinter.ptr(), N * I);
  else ops::gelu_erf_backward(A.inter_pre.ptr(), dinter.ptr(), dinter.ptr(), N * I);
  // x1 feeds intermediate.dense and the residual into h2.
  ops::linear_backward(A.x1.ptr(), L.i_w.ptr(), dinter.ptr(), dx1.ptr(), gp(&BertLayerGrads::i_w),
                       gp(&BertLayerGrads::i_b), N, C, I);
  adapt_back(kInter, A.x1, dinter.ptr(), I, dx1.ptr());
  ops::add_inplace(dx1.ptr(), dh.ptr(), N * C);
  // x1 = LN1(h1), h1 = attention.output.dense(att) + x_in
  ops::layernorm_backward(A.h1.ptr(), L.ln1_g.ptr(), dx1.ptr(), dh.ptr(), gp(&BertLayerGrads::ln1_g),
                          gp(&BertLayerGrads::ln1_b), N, C, cfg.layer_norm_eps);
  ops::linear_backward(A.att.ptr(), L.ao_w.ptr(), dh.ptr(), datt.ptr(), gp(&BertLayerGrads::ao_w),
                       gp(&BertLayerGrads::ao_b), N, C, C);
  adapt_back(kAttnOut, A.att, dh.ptr(), C, datt.ptr());
  ops::AttentionBackwardParams bp;
  bp.fwd = bert_attention(A.qkv.ptr(), nullptr, acts.mask, B, T, C, H);
  bp.dout = datt.ptr(), bp.dout_stride = C;
  bp.dq = dqkv.ptr(), bp.dk = dqkv.ptr() + C, bp.dv = dqkv.ptr() + 2 * C;
  bp.dq_stride = bp.dk_stride = bp.dv_stride = 3 * C;
  ops::attention_backward(bp);
  // x_in feeds the fused qkv projection and the residual into h1. Below layer 0 lie the embeddings: frozen
  // (no input gradient is needed there, only the adapters' own) unless full gradients are requested.
  float* dxin = l > 0 || grads ? dx.ptr() : nullptr;
  if (dxin || G)
    ops::linear_backward(A.x_in.ptr(), L.qkv_w.ptr(), dqkv.ptr(), dxin, gp(&BertLayerGrads::qkv_w),
                         gp(&BertLayerGrads::qkv_b), N, C, 3 * C);
  adapt_back(kQuery, A.x_in, dqkv.ptr(), 3 * C, dxin);
  adapt_back(kKey, A.x_in, dqkv.ptr() + C, 3 * C, dxin);
  adapt_back(kValue, A.x_in, dqkv.ptr() + 2 * C, 3 * C, dxin);
  if (dxin) ops::add_inplace(dxin, dh.ptr(), N * C);
  if (acts.checkpointing) A = BertLayerActs{};  // free the recomputed activations
}

void BertModel::embeddings_backward(const BertActs& acts, const Tensor& dx, BertGrads& grads) const {
  const int64_t B = acts.B, T = acts.T, N = B * T, C = cfg.hidden_size;
  // dx: the gradient at the embedding LayerNorm's output. x = LN(word[id] + type[0] + pos[t]).
  const Tensor xe = embed_sum(acts.ids, B, T);
  Tensor de({N, C});
  ops::layernorm_backward(xe.ptr(), emb_ln_g.ptr(), dx.ptr(), de.ptr(), grads.emb_ln_g.ptr(), grads.emb_ln_b.ptr(),
                          N, C, cfg.layer_norm_eps);
  ops::embedding_backward(acts.ids.data(), de.ptr(), grads.word_emb.ptr(), N, C);
  // Position t and token type 0: summed over rows in a fixed order (deterministic).
  float* dpos = grads.pos_emb.ptr();
  float* dtype0 = grads.type_emb.ptr();
  for (int64_t r = 0; r < N; ++r) {
    const float* d = de.ptr() + r * C;
    float* dp = dpos + (r % T) * C;
    for (int64_t c = 0; c < C; ++c) dp[c] += d[c], dtype0[c] += d[c];
  }
}

Tensor mean_pool(const Tensor& hidden, const std::vector<float>& mask, int64_t B, int64_t T) {
  const int64_t C = hidden.dim(-1);
  Tensor out({B, C});
  for (int64_t b = 0; b < B; ++b) {
    float* o = out.ptr() + b * C;
    float n = 0.0f;
    for (int64_t t = 0; t < T; ++t) {
      const float m = mask[size_t(b * T + t)];
      if (m == 0.0f) continue;
      n += m;
      const float* h = hidden.ptr() + (b * T + t) * C;
      for (int64_t c = 0; c < C; ++c) o[c] += h[c] * m;
    }
    // sentence-transformers clamps the token count at 1e-9.
    const float inv = 1.0f / std::max(n, 1e-9f);
    for (int64_t c = 0; c < C; ++c) o[c] *= inv;
  }
  return out;
}

Tensor mean_pool_backward(const Tensor& dpooled, const std::vector<float>& mask, int64_t B, int64_t T) {
  const int64_t C = dpooled.dim(-1);
  Tensor dh({B, T, C});
  for (int64_t b = 0; b < B; ++b) {
    float n = 0.0f;
    for (int64_t t = 0; t < T; ++t) n += mask[size_t(b * T + t)];
    const float inv = 1.0f / std::max(n, 1e-9f);
    for (int64_t t = 0; t < T; ++t) {
      const float m = mask[size_t(b * T + t)] * inv;
      if (m == 0.0f) continue;
      for (int64_t c = 0; c < C; ++c) dh.data[size_t((b * T + t) * C + c)] = dpooled.data[size_t(b * C + c)] * m;
    }
  }
  return dh;
}

}  // namespace xv
