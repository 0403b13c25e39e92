#include "models/bert.h"

#include <cmath>

#include <fmt/ranges.h>

#include "core/safetensors.h"
#include "kernels/ops.h"
#include "models/grads.h"

namespace xv {

BertModel BertModel::load(const std::string& model_dir, const LoadOptions& o) {
  BertConfig cfg = load_bert_config(model_dir);
  WeightStore ws = WeightStore::open_dir(model_dir);
  ws.set_shapes_only(o.shapes_only);
  return from_weights(cfg, ws, o);
}

BertModel BertModel::from_weights(const BertConfig& cfg, const WeightStore& ws, const LoadOptions& o) {
  BertModel m;
  m.cfg = cfg;
  m.device = o.device;
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size;
  const std::string pre = ws.has("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  // Read on the host in the storage dtype, then onto the device (a shape-only tensor just takes the device).
  auto on_device = [&](Tensor t) { return std::move(t).to(o.device); };
  auto raw = [&](const std::string& n, const Shape& s) { return ws.get(pre + n, s, o.weight_dtype); };
  auto get = [&](const std::string& n, const Shape& s) { return on_device(raw(n, s)); };
  m.word_emb = get("embeddings.word_embeddings.weight", {cfg.vocab_size, C});
  m.pos_emb = get("embeddings.position_embeddings.weight", {cfg.max_position_embeddings, C});
  m.type_emb = get("embeddings.token_type_embeddings.weight", {cfg.type_vocab_size, C});
  m.emb_ln_g = get("embeddings.LayerNorm.weight", {C});
  m.emb_ln_b = get("embeddings.LayerNorm.bias", {C});
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    BertLayer L;
    L.qkv_w = on_device(concat_rows({raw(p + "attention.self.query.weight", {C, C}),
                                     raw(p + "attention.self.key.weight", {C, C}),
                                     raw(p + "attention.self.value.weight", {C, C})}));
    L.qkv_b = on_device(concat_rows({raw(p + "attention.self.query.bias", {C}), raw(p + "attention.self.key.bias", {C}),
                                     raw(p + "attention.self.value.bias", {C})}));
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
      l.adapters.push_back(make_lora(path, in[s], out[s], cfg, seed + 1000003ull * l.adapters.size(), m.device));
    }
    l.slot.push_back(idx);
  }
  XV_CHECK(!l.adapters.empty(), "lora.targets [{}] match no Linear layer of the bert model (its Linear layers: query, "
           "key, value, dense (attention.output.dense and output.dense), intermediate.dense)", fmt::join(cfg.targets, ", "));
  return l;
}

void BertLora::zero_grad() {
  for (auto& a : adapters) a.zero_grad();
}

namespace {

// The gradient tensors of a layer, in BertLayer's field order (one walk for zeros_like and zero).
template <typename L, typename F>
void each_layer_tensor(L& x, F fn) {
  for (auto* t : {&x.qkv_w, &x.qkv_b, &x.ao_w, &x.ao_b, &x.ln1_g, &x.ln1_b, &x.i_w, &x.i_b, &x.o_w, &x.o_b, &x.ln2_g,
                  &x.ln2_b})
    fn(*t);
}

}  // namespace

BertGrads BertGrads::zeros_like(const BertModel& m) {
  BertGrads g;
  auto z = [&](const Tensor& w) { return Tensor(w.shape(), DType::F32, m.device); };
  g.word_emb = z(m.word_emb), g.pos_emb = z(m.pos_emb), g.type_emb = z(m.type_emb);
  g.emb_ln_g = z(m.emb_ln_g), g.emb_ln_b = z(m.emb_ln_b);
  for (const BertLayer& L : m.layers)
    g.layers.push_back(grads_like<BertLayerGrads>(L, m.device, [](auto& x, auto fn) { each_layer_tensor(x, fn); }));
  return g;
}

void BertGrads::zero() {
  for (Tensor* t : {&word_emb, &pos_emb, &type_emb, &emb_ln_g, &emb_ln_b}) ops::fill(*t, 0.0f);
  for (BertLayerGrads& G : layers) each_layer_tensor(G, [](Tensor& t) { ops::fill(t, 0.0f); });
}

Tensor BertModel::input_ids(const std::vector<int32_t>& ids, int64_t B, int64_t T) const {
  XV_CHECK(int64_t(ids.size()) == B * T, "bert forward: ids must hold B*T = {}", B * T);
  XV_CHECK(T <= cfg.max_position_embeddings, "bert forward: sequence length {} exceeds max_position_embeddings {}",
           T, cfg.max_position_embeddings);
  for (int32_t id : ids)
    XV_CHECK(id >= 0 && id < cfg.vocab_size, "bert forward: token id {} outside the vocabulary [0, {})", id,
             cfg.vocab_size);
  return Tensor::from_vector({B * T}, ids, device);
}

Tensor BertModel::input_mask(const std::vector<float>& mask, int64_t B, int64_t T) const {
  XV_CHECK(int64_t(mask.size()) == B * T, "bert forward: mask must hold B*T = {}", B * T);
  return Tensor::from_vector({B, T}, mask, DType::F32, device);
}

Tensor BertModel::embed_sum(const Tensor& ids, int64_t B, int64_t T) const {
  const int64_t C = cfg.hidden_size, N = B * T;
  // word + token type 0 + position, in Hugging Face's order: (word + type) + position. embed() then applies
  // the LayerNorm.
  Tensor x({N, C}, DType::F32, device);
  ops::gather_rows(word_emb, View{}, ids, x);
  ops::add_rows(x, type_emb.rows(0, 1));
  ops::add_rows(x, pos_emb.rows(0, T));  // row r gets position r mod T
  return x;
}

Tensor BertModel::embed(const Tensor& ids, int64_t B, int64_t T) const {
  Tensor x = embed_sum(ids, B, T);
  ops::layernorm(x, emb_ln_g, emb_ln_b, x, cfg.layer_norm_eps);
  return x;
}

namespace {

ops::AttentionParams bert_attention(const Tensor& qkv, const View& o, const Tensor& mask, int64_t B, int64_t T,
                                    int64_t C, int64_t H) {
  ops::AttentionParams p;
  p.q = qkv.cols(0, C), p.k = qkv.cols(C, C), p.v = qkv.cols(2 * C, C), p.o = o;
  p.B = B, p.T = T, p.Hq = H, p.Hkv = H, p.D = C / H;
  p.key_mask = mask.view();
  p.causal = false;
  p.scale = 1.0f / std::sqrt(float(C / H));
  return p;
}

ops::Act bert_act(const BertConfig& cfg) { return cfg.hidden_act != "gelu" ? ops::Act::gelu_tanh : ops::Act::gelu_erf; }

}  // namespace

void BertModel::layer_forward(int64_t l, Tensor& x, const Tensor& mask, int64_t B, int64_t T, const BertLora* lora,
                              const LoraRun& run, BertLayerActs* acts) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, H = cfg.num_attention_heads, N = B * T;
  const BertLayer& L = layers[size_t(l)];
  auto act = [&](Shape s) { return Tensor(std::move(s), DType::F32, device); };
  // Without acts (inference, the teacher) x itself is the layer input: it is only overwritten at the end.
  BertLayerActs local;
  BertLayerActs& A = acts ? *acts : local;
  if (acts) A.x_in = x;
  const Tensor& xin = acts ? A.x_in : x;
  A.qkv = act({N, 3 * C});
  A.att = act({N, C});
  A.h1 = act({N, C});
  A.x1 = act({N, C});
  A.inter_pre = act({N, I});
  A.h2 = act({N, C});
  // Applies adapter `s` of this layer: y (a view) += LoRA(in).
  auto adapt = [&](int s, const Tensor& in, const View& y) {
    const LoraAdapter* a = lora ? lora->at(l, s) : nullptr;
    if (!a) return;
    lora_forward(*a, in, y, run.for_adapter(l * kBertSlots + s), &A.xa[size_t(s)]);
  };
  ops::linear(xin, L.qkv_w, L.qkv_b, A.qkv);
  adapt(kQuery, xin, A.qkv.cols(0, C));
  adapt(kKey, xin, A.qkv.cols(C, C));
  adapt(kValue, xin, A.qkv.cols(2 * C, C));
  ops::attention(bert_attention(A.qkv, A.att, mask, B, T, C, H));
  ops::linear(A.att, L.ao_w, L.ao_b, A.h1);
  adapt(kAttnOut, A.att, A.h1);
  ops::add(A.h1, xin);
  ops::layernorm(A.h1, L.ln1_g, L.ln1_b, A.x1, cfg.layer_norm_eps);
  ops::linear(A.x1, L.i_w, L.i_b, A.inter_pre);
  adapt(kInter, A.x1, A.inter_pre);
  A.inter = A.inter_pre;
  ops::activation(bert_act(cfg), A.inter);
  ops::linear(A.inter, L.o_w, L.o_b, A.h2);
  adapt(kOut, A.inter, A.h2);
  ops::add(A.h2, A.x1);
  ops::layernorm(A.h2, L.ln2_g, L.ln2_b, x, cfg.layer_norm_eps);
}

Tensor BertModel::forward(const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B, int64_t T,
                          const BertLora* lora) const {
  const Tensor m = input_mask(mask, B, T);
  Tensor x = embed(input_ids(ids, B, T), B, T);
  for (int64_t l = 0; l < int64_t(layers.size()); ++l) layer_forward(l, x, m, B, T, lora, {}, nullptr);
  x.reshape({B, T, cfg.hidden_size});
  return x;
}

void BertModel::begin_acts(BertActs& acts, const std::vector<int32_t>& ids, const std::vector<float>& mask,
                           int64_t B, int64_t T) const {
  acts.B = B, acts.T = T;
  acts.ids = input_ids(ids, B, T);
  acts.mask = input_mask(mask, B, T);
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
  auto act = [&](Shape s) { return Tensor(std::move(s), DType::F32, device); };
  Tensor dh = act({N, C}), dx1 = act({N, C}), dinter = act({N, I}), datt = act({N, C}), dqkv = act({N, 3 * C});
  const BertLayer& L = layers[size_t(l)];
  BertLayerGrads* G = grads ? &grads->layers[size_t(l)] : nullptr;
  // The parameter gradients of this layer (absent: frozen, the LoRA path).
  auto gp = [&](Tensor BertLayerGrads::*f) -> View { return G ? (G->*f).view() : View{}; };
  BertLayerActs& A = acts.layers[size_t(l)];
  if (acts.checkpointing) {  // recompute this layer from its kept input
    Tensor x = A.x_in;
    layer_forward(l, x, acts.mask, B, T, &lora, run, &A);
  }
  auto adapt_back = [&](int s, const Tensor& in, const View& dy, const View& din) {
    if (LoraAdapter* a = lora.at(l, s))
      lora_backward(*a, in, A.xa[size_t(s)], run.for_adapter(l * kBertSlots + s), dy, din);
  };
  // x_out = LN2(h2), h2 = output.dense(inter) + x1
  ops::layernorm_backward(A.h2, L.ln2_g, dx, dh, gp(&BertLayerGrads::ln2_g), gp(&BertLayerGrads::ln2_b),
                          cfg.layer_norm_eps);
  ops::linear_backward(A.inter, L.o_w, dh, dinter, gp(&BertLayerGrads::o_w), gp(&BertLayerGrads::o_b));
  adapt_back(kOut, A.inter, dh, dinter);
  ops::activation_backward(bert_act(cfg), A.inter_pre, dinter, dinter);
  // x1 feeds intermediate.dense and the residual into h2.
  ops::linear_backward(A.x1, L.i_w, dinter, dx1, gp(&BertLayerGrads::i_w), gp(&BertLayerGrads::i_b));
  adapt_back(kInter, A.x1, dinter, dx1);
  ops::add(dx1, dh);
  // x1 = LN1(h1), h1 = attention.output.dense(att) + x_in
  ops::layernorm_backward(A.h1, L.ln1_g, dx1, dh, gp(&BertLayerGrads::ln1_g), gp(&BertLayerGrads::ln1_b),
                          cfg.layer_norm_eps);
  ops::linear_backward(A.att, L.ao_w, dh, datt, gp(&BertLayerGrads::ao_w), gp(&BertLayerGrads::ao_b));
  adapt_back(kAttnOut, A.att, dh, datt);
  ops::AttentionBackwardParams bp;
  bp.fwd = bert_attention(A.qkv, View{}, acts.mask, B, T, C, H);
  bp.dout = datt;
  bp.dq = dqkv.cols(0, C), bp.dk = dqkv.cols(C, C), bp.dv = dqkv.cols(2 * C, C);
  ops::attention_backward(bp);
  // x_in feeds the fused qkv projection and the residual into h1. Below layer 0 lie the embeddings: frozen
  // (no input gradient is needed there, only the adapters' own) unless full gradients are requested.
  const View dxin = l > 0 || grads ? dx.view() : View{};
  ops::linear_backward(A.x_in, L.qkv_w, dqkv, dxin, gp(&BertLayerGrads::qkv_w), gp(&BertLayerGrads::qkv_b));
  adapt_back(kQuery, A.x_in, dqkv.cols(0, C), dxin);
  adapt_back(kKey, A.x_in, dqkv.cols(C, C), dxin);
  adapt_back(kValue, A.x_in, dqkv.cols(2 * C, C), dxin);
  if (dxin.present) ops::add(dxin, dh);
  if (acts.checkpointing) A = BertLayerActs{};  // free the recomputed activations
}

void BertModel::embeddings_backward(const BertActs& acts, const Tensor& dx, BertGrads& grads) const {
  const int64_t B = acts.B, T = acts.T, N = B * T, C = cfg.hidden_size;
  // dx: the gradient at the embedding LayerNorm's output. x = LN(word[id] + type[0] + pos[t]).
  const Tensor xe = embed_sum(acts.ids, B, T);
  Tensor de({N, C}, DType::F32, device);
  ops::layernorm_backward(xe, emb_ln_g, dx, de, grads.emb_ln_g, grads.emb_ln_b, cfg.layer_norm_eps);
  ops::scatter_add_rows(de, acts.ids, grads.word_emb, View{});
  // Position t and token type 0: summed over rows in order (deterministic).
  std::vector<int32_t> pos(static_cast<size_t>(N)), type0(static_cast<size_t>(N), 0);
  for (int64_t r = 0; r < N; ++r) pos[size_t(r)] = int32_t(r % T);
  ops::scatter_add_rows(de, Tensor::indices(pos, device), grads.pos_emb, View{});
  ops::scatter_add_rows(de, Tensor::indices(type0, device), grads.type_emb, View{});
}

}  // namespace xv
