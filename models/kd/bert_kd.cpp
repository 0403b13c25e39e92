// KdModel for the bert backbone: LoRA student over the frozen encoder, mean pooling, teacher = adapters off.
//
// trainable: full — every base weight is trained (BertModel::layer_backward and embeddings_backward with
// BertGrads), no adapters:
//  * trainable() names the tensors as Hugging Face's BertModel does (no "bert." prefix), except the fused
//    attention projection, which checkpoints hold as one tensor per layer:
//    "encoder.layer.N.attention.self.qkv.weight" (3C, C) and ".bias" (3C), query, key, value stacked.
//    save_merged splits it back into query/key/value with the checkpoint's own names and dtypes.
//  * The teacher cannot be the student (its weights move): forward_backward requires teacher targets from a
//    teacher cache (KdStepOptions::teacher_en, data.teacher_cache, built by `corpus cache-teacher` from a
//    freshly loaded model). teacher_embed uses the current weights, so it gives the original model's
//    embeddings only before the first update.
//  * There is no adapter: save_adapter and load_adapter fail; export with save_merged.

#include <algorithm>
#include <filesystem>

#include "core/safetensors.h"
#include "kernels/ops.h"
#include "models/bert.h"
#include "models/kd/kd_shell.h"
#include "models/kd/losses.h"
#include "models/pooling.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

struct Batch {
  std::vector<int32_t> ids;
  std::vector<float> mask;
  int64_t B = 0, T = 0;
};

// Right-pads token rows into a batch; rows longer than the model's limit are an error naming the pair.
Batch pad_rows(const std::vector<std::vector<int32_t>>& rows, int32_t pad, int64_t limit, const char* side) {
  Batch b;
  for (size_t i = 0; i < rows.size(); ++i) {
    XV_CHECK(int64_t(rows[i].size()) <= limit, "pair {}: the {} text has {} tokens, more than the model's {}", i + 1,
             side, rows[i].size(), limit);
    b.T = std::max(b.T, int64_t(rows[i].size()));
  }
  b.B = int64_t(rows.size());
  b.ids.assign(size_t(b.B * b.T), pad);
  b.mask.assign(size_t(b.B * b.T), 0.0f);
  for (int64_t r = 0; r < b.B; ++r)
    for (size_t t = 0; t < rows[size_t(r)].size(); ++t) {
      b.ids[size_t(r * b.T) + t] = rows[size_t(r)][t];
      b.mask[size_t(r * b.T) + t] = 1.0f;
    }
  return b;
}

std::vector<int32_t> encode(const Tokenizer& tok, const std::string& text, size_t i, const char* side) {
  XV_CHECK(!text.empty(), "pair {}: empty {} text", i + 1, side);
  return tok.encode(text, true);
}

Batch tokenize(const Tokenizer& tok, const std::vector<std::string>& texts, int32_t pad, int64_t limit,
               const char* side) {
  std::vector<std::vector<int32_t>> rows;
  for (size_t i = 0; i < texts.size(); ++i) rows.push_back(encode(tok, texts[i], i, side));
  return pad_rows(rows, pad, limit, side);
}

// A pair's two token rows, made ahead by the data reader's workers.
struct BertPrepared : PreparedInputs {
  std::vector<int32_t> en, xx;
};

class BertKdModel : public KdShell {
 public:
  BertKdModel(const std::string& dir, const std::string& trainable, const LoraConfig& lcfg, uint64_t seed,
              const LoadOptions& o)
      : KdShell("bert", dir, trainable, lcfg, seed, o), model_(BertModel::load(dir, load_)) {
    const WeightStore ws = WeightStore::open_dir(dir);
    pre_ = ws.has("bert.embeddings.word_embeddings.weight") ? "bert." : "";
    if (full_) grads_ = BertGrads::zeros_like(model_);
    else lora_ = BertLora::create(model_, lcfg, seed);
  }
  int64_t dim() const override { return model_.cfg.hidden_size; }
  Device device() const override { return model_.device; }
  bool takes_images() const override { return false; }

  void zero_grad() override {
    if (full_) grads_.zero();
    else lora_.zero_grad();
  }

  std::shared_ptr<const PreparedInputs> prepare(const TrainPair& pair) const override { return prepare_one(pair, 0); }

  KdLossTerms forward_backward(const std::vector<TrainPair>& batch, const KdStepOptions& opt) override;

  std::vector<WeightUnit> frozen_units(const UnitOptions&) override {
    if (full_) return {};
    std::vector<WeightUnit> u;
    BertModel& m = model_;
    u.push_back({"embeddings", {&m.word_emb, &m.pos_emb, &m.type_emb, &m.emb_ln_g, &m.emb_ln_b}, {}});
    for (size_t l = 0; l < m.layers.size(); ++l) {
      BertLayer& L = m.layers[l];
      u.push_back({"layer." + std::to_string(l),
                   {&L.qkv_w, &L.qkv_b, &L.ao_w, &L.ao_b, &L.ln1_g, &L.ln1_b, &L.i_w, &L.i_b, &L.o_w, &L.o_b,
                    &L.ln2_g, &L.ln2_b},
                   {}});
    }
    attach_unit_loaders(u);  // each unit read from the checkpoint when the wrapper asks (a deferred base)
    return u;
  }

  // With trainable 'full', the current weights: the original model's embeddings only before the first update.
  Tensor teacher_embed(const std::vector<TrainPair>& batch) override {
    std::vector<std::string> en;
    for (const auto& p : batch) en.push_back(p.text_en);
    return embed_texts(en, "English", nullptr, false);
  }

  Tensor student_embed(const std::vector<std::string>& texts, bool normalize) override {
    return embed_texts(texts, "input", full_ ? nullptr : &lora_, normalize);
  }

 protected:
  std::vector<LoraAdapter>& adapters() override { return lora_.adapters; }
  const std::vector<LoraAdapter>& adapters() const override { return lora_.adapters; }
  void install_adapters(const LoraConfig& c, const std::function<void(std::vector<LoraAdapter>&)>& fill) override {
    BertLora lora = BertLora::create(model_, c, seed_);
    fill(lora.adapters);
    lora_ = std::move(lora);
  }
  // Named as Hugging Face's BertModel does (no "bert." prefix) but for the fused attention projection,
  // "encoder.layer.N.attention.self.qkv.weight" / ".bias" (see the top).
  void for_each_weight(const std::function<void(const std::string&, Tensor&, Tensor*)>& fn) override {
    BertModel& m = model_;
    BertGrads* g = full_ ? &grads_ : nullptr;
    auto G = [&](Tensor BertGrads::*f) { return g ? &(g->*f) : nullptr; };
    fn("embeddings.word_embeddings.weight", m.word_emb, G(&BertGrads::word_emb));
    fn("embeddings.position_embeddings.weight", m.pos_emb, G(&BertGrads::pos_emb));
    fn("embeddings.token_type_embeddings.weight", m.type_emb, G(&BertGrads::type_emb));
    fn("embeddings.LayerNorm.weight", m.emb_ln_g, G(&BertGrads::emb_ln_g));
    fn("embeddings.LayerNorm.bias", m.emb_ln_b, G(&BertGrads::emb_ln_b));
    for (size_t l = 0; l < m.layers.size(); ++l) {
      BertLayer& L = m.layers[l];
      BertLayerGrads* lg = g ? &g->layers[l] : nullptr;
      auto LG = [&](Tensor BertLayerGrads::*f) { return lg ? &(lg->*f) : nullptr; };
      const std::string p = "encoder.layer." + std::to_string(l) + ".";
      fn(p + "attention.self.qkv.weight", L.qkv_w, LG(&BertLayerGrads::qkv_w));
      fn(p + "attention.self.qkv.bias", L.qkv_b, LG(&BertLayerGrads::qkv_b));
      fn(p + "attention.output.dense.weight", L.ao_w, LG(&BertLayerGrads::ao_w));
      fn(p + "attention.output.dense.bias", L.ao_b, LG(&BertLayerGrads::ao_b));
      fn(p + "attention.output.LayerNorm.weight", L.ln1_g, LG(&BertLayerGrads::ln1_g));
      fn(p + "attention.output.LayerNorm.bias", L.ln1_b, LG(&BertLayerGrads::ln1_b));
      fn(p + "intermediate.dense.weight", L.i_w, LG(&BertLayerGrads::i_w));
      fn(p + "intermediate.dense.bias", L.i_b, LG(&BertLayerGrads::i_b));
      fn(p + "output.dense.weight", L.o_w, LG(&BertLayerGrads::o_w));
      fn(p + "output.dense.bias", L.o_b, LG(&BertLayerGrads::o_b));
      fn(p + "output.LayerNorm.weight", L.ln2_g, LG(&BertLayerGrads::ln2_g));
      fn(p + "output.LayerNorm.bias", L.ln2_b, LG(&BertLayerGrads::ln2_b));
    }
  }
  // The checkpoint's tensors of a weight: itself (with the checkpoint's prefix), or query/key/value for the
  // fused projection.
  std::vector<std::string> checkpoint_names(const std::string& name) const override {
    const size_t q = name.find("attention.self.qkv.");
    if (q == std::string::npos) return {pre_ + name};
    const std::string stem = pre_ + name.substr(0, q) + "attention.self.", kind = name.substr(name.rfind('.'));
    return {stem + "query" + kind, stem + "key" + kind, stem + "value" + kind};
  }
  PreparedSize prepared_size(const PreparedInputs& p) const override {
    const auto& b = dynamic_cast<const BertPrepared&>(p);
    return {std::min<int64_t>(int64_t(std::max(b.en.size(), b.xx.size())), model_.cfg.max_seq_length), 0};
  }

  // Per row (N = batch x tokens, f32): a layer's BertLayerActs hold 8C + 2I + (the ranks of its adapters);
  // each student pass keeps that for every layer (only the layer input C with checkpointing). Besides: the
  // hidden states of both students and the teacher and both students' gradients (5C), one layer recomputed
  // in backward (checkpointing) and one layer's backward temporaries.
  uint64_t activation_bytes(const ActivationShape& s) const override {
    const BertConfig& c = model_.cfg;
    const int64_t C = c.hidden_size, I = c.intermediate_size, L = c.num_hidden_layers;
    const int64_t T = c.max_seq_length > 0 ? std::min(s.tokens, c.max_seq_length) : s.tokens;
    int64_t ranks = 0;  // the most LoRA rank any one layer carries
    for (int64_t l = 0; l < int64_t(lora_.slot.size()); ++l) {
      int64_t r = 0;
      for (int k = 0; k < kBertSlots; ++k)
        if (const LoraAdapter* a = lora_.at(l, k)) r += a->r;
      ranks = std::max(ranks, r);
    }
    const int64_t layer = 8 * C + 2 * I + ranks;
    const int64_t kept = L * (s.checkpointing ? C : layer);
    const int64_t per_row = 2 * kept + (s.teacher_cache ? 4 : 5) * C + (s.checkpointing ? layer : 0) + layer;
    return uint64_t(s.batch) * uint64_t(T) * uint64_t(per_row) * sizeof(float);
  }
  std::vector<std::string> peft_prefixes() const override { return {"bert."}; }
  MergedFiles merged_files() const override {
    return {{"config.json", "tokenizer.json"},
            {"sentence_bert_config.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
             "modules.json", "config_sentence_transformers.json"},
            true};
  }

 private:
  BertModel model_;
  std::string pre_;  // the checkpoint's tensor prefix: "bert." or ""
  BertLora lora_;    // empty with trainable 'full'
  BertGrads grads_;  // trainable 'full'

  // Mean-pooled embeddings of texts (B, C) on the host, with `lora` (the student) or without (the teacher).
  Tensor embed_texts(const std::vector<std::string>& texts, const char* what, const BertLora* lora, bool normalize) {
    const Batch b = tokenize(*tok_, texts, int32_t(model_.cfg.pad_token_id), model_.cfg.max_seq_length, what);
    Tensor e = mean_pool(model_.forward(b.ids, b.mask, b.B, b.T, lora), model_.input_mask(b.mask, b.B, b.T), b.B, b.T);
    if (normalize) ops::l2_normalize(e);
    return std::move(e).to(Device::cpu());
  }

  // Token rows of a pair (the corpus's pre-tokenised ids when it has them); `i` numbers it in messages.
  std::shared_ptr<const PreparedInputs> prepare_one(const TrainPair& pair, size_t i) const {
    XV_CHECK(pair.image.empty() && !pair.image_bytes,
             "pair {}: the bert backbone takes text only, but an image was given", i + 1);
    auto p = std::make_shared<BertPrepared>();
    p->en = !pair.ids_en.empty() ? pair.ids_en : encode(*tok_, pair.text_en, i, "English");
    p->xx = !pair.ids_xx.empty() ? pair.ids_xx : encode(*tok_, pair.text_xx, i, "other-language");
    return p;
  }
};

// Unit by unit (core/units.h): each unit is acquired once for the teacher pass (adapters off, unless the teacher
// cache gives the targets) and both student passes (independent dropout masks); backward acquires the layers
// again, last first, starting with the last layer, still held from forward.
KdLossTerms BertKdModel::forward_backward(const std::vector<TrainPair>& batch, const KdStepOptions& opt) {
  check_step(batch, opt);
  std::vector<std::vector<int32_t>> en, xx;
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto* p = dynamic_cast<const BertPrepared*>(batch[i].prepared.get());
    std::shared_ptr<const PreparedInputs> made;
    if (!p) made = prepare_one(batch[i], i), p = static_cast<const BertPrepared*>(made.get());
    en.push_back(p->en);
    xx.push_back(p->xx);
  }
  const int32_t pad = int32_t(model_.cfg.pad_token_id);
  const Batch ben = pad_rows(en, pad, model_.cfg.max_seq_length, "English");
  const Batch bxx = pad_rows(xx, pad, model_.cfg.max_seq_length, "other-language");
  if (opt.teacher_en)
    XV_CHECK(opt.teacher_en->numel() == ben.B * dim(), "kd step: teacher cache rows do not match the batch");
  const LoraRun run_en{opt.dropout_seed ? opt.dropout_seed * 2 + 1 : 0};
  const LoraRun run_xx{opt.dropout_seed ? opt.dropout_seed * 2 + 2 : 0};
  const BertLora* lora = full_ ? nullptr : &lora_;
  BertGrads* grads = full_ ? &grads_ : nullptr;
  const int64_t L = int64_t(model_.layers.size());
  const bool teacher_pass = !opt.teacher_en;

  // Forward: the embeddings, then the layers, teacher and both students per unit.
  BertActs acts_en, acts_xx;
  acts_en.checkpointing = acts_xx.checkpointing = opt.checkpointing;
  model_.begin_acts(acts_en, ben.ids, ben.mask, ben.B, ben.T);
  model_.begin_acts(acts_xx, bxx.ids, bxx.mask, bxx.B, bxx.T);
  unit_acquire(units_, 0, L > 0 ? 1 : -1);
  Tensor x_en = model_.embed(acts_en.ids, ben.B, ben.T), x_xx = model_.embed(acts_xx.ids, bxx.B, bxx.T), x_t;
  if (teacher_pass) x_t = x_en;
  if (L > 0) unit_release(units_, 0);
  for (int64_t l = 0; l < L; ++l) {
    // The next unit: the following layer, or for the last layer the one backward needs after it.
    unit_acquire(units_, int(1 + l), l + 1 < L ? int(2 + l) : L > 1 ? int(L - 1) : -1);
    if (teacher_pass) model_.layer_forward(l, x_t, acts_en.mask, ben.B, ben.T, nullptr, {}, nullptr);
    model_.layer_forward_kept(l, x_en, acts_en, lora, run_en);
    model_.layer_forward_kept(l, x_xx, acts_xx, lora, run_xx);
    if (l + 1 < L) unit_release(units_, int(1 + l));
  }

  // The loss on the mean-pooled embeddings, and its gradient at the last layer's outputs x_* (B*T, C).
  const int64_t C = model_.cfg.hidden_size;
  const Tensor t_en = teacher_pass ? mean_pool(x_t, acts_en.mask, ben.B, ben.T) : opt.teacher_en->to(device());
  KdGrads g;
  const KdLossTerms out = kd_loss(mean_pool(x_en, acts_en.mask, ben.B, ben.T),
                                  mean_pool(x_xx, acts_xx.mask, bxx.B, bxx.T), t_en, opt.loss_scale, &g);
  Tensor dx_en = mean_pool_backward(g.d_en, acts_en.mask, ben.B, ben.T);
  Tensor dx_xx = mean_pool_backward(g.d_xx, acts_xx.mask, bxx.B, bxx.T);
  dx_en.reshape({ben.B * ben.T, C});
  dx_xx.reshape({bxx.B * bxx.T, C});

  // Backward, last layer first; with full gradients down into the embeddings (nothing is frozen then).
  for (int64_t l = L - 1; l >= 0; --l) {
    if (l + 1 < L) unit_acquire(units_, int(1 + l), l > 0 ? int(l) : -1);
    model_.layer_backward(l, acts_en, dx_en, lora_, run_en, grads);
    model_.layer_backward(l, acts_xx, dx_xx, lora_, run_xx, grads);
    unit_release(units_, int(1 + l));
  }
  if (grads) {
    model_.embeddings_backward(acts_en, dx_en, *grads);
    model_.embeddings_backward(acts_xx, dx_xx, *grads);
  }
  return out;
}

}  // namespace

std::unique_ptr<KdModel> make_phi3v_kd_model(const std::string& dir, const std::string& trainable,
                                             const LoraConfig& lora, uint64_t seed, const LoadOptions& o);

std::unique_ptr<KdModel> KdModel::load(const std::string& model_dir, const std::string& trainable,
                                       const LoraConfig& lora, uint64_t seed, const LoadOptions& o) {
  const std::string mt = read_model_type((fs::path(model_dir) / "config.json").string());
  if (mt == "bert") return std::make_unique<BertKdModel>(model_dir, trainable, lora, seed, o);
  if (mt == "phi3_v") return make_phi3v_kd_model(model_dir, trainable, lora, seed, o);
  fail("{}/config.json: field 'model_type' is '{}', expected 'bert' or 'phi3_v'", model_dir, mt);
}

}  // namespace xv
