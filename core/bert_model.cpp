#include "core/bert_model.h"

#include <cmath>

#include "core/safetensors.h"
#include "kernels/ops.h"

namespace xv {

BertModel BertModel::load(const std::string& model_dir) {
  BertConfig cfg = load_bert_config(model_dir);
  WeightStore ws = WeightStore::open_dir(model_dir);
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

Tensor BertModel::forward(const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B,
                          int64_t T) const {
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size, H = cfg.num_attention_heads, D = C / H;
  const int64_t N = B * T;
  XV_CHECK(int64_t(ids.size()) == N && int64_t(mask.size()) == N, "bert forward: ids/mask must hold B*T = {}", N);
  XV_CHECK(T <= cfg.max_position_embeddings, "bert forward: sequence length {} exceeds max_position_embeddings {}",
           T, cfg.max_position_embeddings);
  for (int32_t id : ids)
    XV_CHECK(id >= 0 && id < cfg.vocab_size, "bert forward: token id {} outside the vocabulary [0, {})", id,
             cfg.vocab_size);
  // Embeddings: word + position + token_type 0, then LayerNorm.
  Tensor x({N, C});
  ops::embedding(ids.data(), word_emb.ptr(), x.ptr(), N, C);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* pe = pos_emb.ptr() + (r % T) * C;
    const float* te = type_emb.ptr();
    float* xr = x.ptr() + r * C;
    for (int64_t c = 0; c < C; ++c) xr[c] = (xr[c] + te[c]) + pe[c];  // HF order: (word + type) + position
  }
  ops::layernorm(x.ptr(), emb_ln_g.ptr(), emb_ln_b.ptr(), x.ptr(), N, C, cfg.layer_norm_eps);

  Tensor qkv({N, 3 * C}), att({N, C}), tmp({N, C}), inter({N, I});
  const bool tanh_gelu = cfg.hidden_act != "gelu";
  for (const BertLayer& L : layers) {
    ops::linear(x.ptr(), L.qkv_w.ptr(), L.qkv_b.ptr(), qkv.ptr(), N, C, 3 * C);
    ops::AttentionParams p;
    p.q = qkv.ptr();
    p.k = qkv.ptr() + C;
    p.v = qkv.ptr() + 2 * C;
    p.o = att.ptr();
    p.q_stride = p.k_stride = p.v_stride = 3 * C;
    p.o_stride = C;
    p.B = B, p.T = T, p.Hq = H, p.Hkv = H, p.D = D;
    p.key_mask = mask.data();
    p.causal = false;
    p.scale = 1.0f / std::sqrt(float(D));
    ops::attention(p);
    ops::linear(att.ptr(), L.ao_w.ptr(), L.ao_b.ptr(), tmp.ptr(), N, C, C);
    ops::add_inplace(tmp.ptr(), x.ptr(), N * C);
    ops::layernorm(tmp.ptr(), L.ln1_g.ptr(), L.ln1_b.ptr(), x.ptr(), N, C, cfg.layer_norm_eps);
    ops::linear(x.ptr(), L.i_w.ptr(), L.i_b.ptr(), inter.ptr(), N, C, I);
    if (tanh_gelu) ops::gelu_tanh(inter.ptr(), N * I);
    else ops::gelu_erf(inter.ptr(), N * I);
    ops::linear(inter.ptr(), L.o_w.ptr(), L.o_b.ptr(), tmp.ptr(), N, I, C);
    ops::add_inplace(tmp.ptr(), x.ptr(), N * C);
    ops::layernorm(tmp.ptr(), L.ln2_g.ptr(), L.ln2_b.ptr(), x.ptr(), N, C, cfg.layer_norm_eps);
  }
  x.reshape({B, T, C});
  return x;
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

}  // namespace xv
