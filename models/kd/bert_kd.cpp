// KdModel for the bert backbone: LoRA student over the frozen encoder, mean pooling, teacher = adapters off.
//
// trainable: full — every base weight is trained (BertModel::layer_backward and embeddings_backward with BertGrads), no adapters:
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
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/atomic_dir.h"
#include "models/bert.h"
#include "models/peft_adapter.h"
#include "core/file_util.h"
#include "models/kd/kd_model.h"
#include "core/safetensors.h"
#include "tokenizer/tokenizer.h"
#include "kernels/ops.h"

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

class BertKdModel : public KdModel {
 public:
  BertKdModel(const std::string& dir, const std::string& trainable, const LoraConfig& lcfg, uint64_t seed,
              bool defer_frozen)
      : dir_(dir), lcfg_(lcfg), seed_(seed), defer_(defer_frozen && trainable == "lora"),
        model_(BertModel::load(dir, defer_)),
        tok_(Tokenizer::from_file((fs::path(dir) / "tokenizer.json").string())) {
    XV_CHECK(trainable == "lora" || trainable == "full", "bert: trainable '{}' is not supported (lora or full)",
             trainable);
    full_ = trainable == "full";
    if (full_) grads_ = BertGrads::zeros_like(model_);
    else lora_ = BertLora::create(model_, lcfg, seed);
  }
  const std::string& arch() const override { return arch_; }
  int64_t dim() const override { return model_.cfg.hidden_size; }

  std::vector<TrainableTensor> trainable() override {
    std::vector<TrainableTensor> out;
    if (full_) {
      std::vector<Tensor*> gs;
      for_each_weight(grads_, [&](const std::string&, Tensor& g) { gs.push_back(&g); });
      for_each_weight(model_, [&](const std::string& n, Tensor& w) { out.push_back({n, &w, gs[out.size()]}); });
      return out;
    }
    for (auto& a : lora_.adapters) {
      out.push_back({a.a_name(), &a.A, &a.dA});
      out.push_back({a.b_name(), &a.B, &a.dB});
    }
    return out;
  }
  void zero_grad() override {
    if (full_) grads_.zero();
    else lora_.zero_grad();
  }

  std::shared_ptr<const PreparedInputs> prepare(const TrainPair& pair) const override { return prepare_one(pair, 0); }

  KdLossTerms forward_backward(const std::vector<TrainPair>& batch, const KdStepOptions& opt) override {
    XV_CHECK(!batch.empty(), "kd step: empty batch");
    XV_CHECK(!full_ || opt.teacher_en,
             "kd step: trainable 'full' needs teacher targets from a teacher cache (set data.teacher_cache, built by "
             "`xvlm2vec corpus cache-teacher`): with every weight trained, the student cannot be its own teacher");
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
    // Unit by unit (core/units.h): each unit is acquired once for the teacher pass (adapters off, unless
    // the teacher cache gives the targets) and both student passes (independent dropout masks); backward
    // acquires the layers again, last first, starting with the last layer, still held from forward.
    const LoraRun run_en{opt.dropout_seed ? opt.dropout_seed * 2 + 1 : 0};
    const LoraRun run_xx{opt.dropout_seed ? opt.dropout_seed * 2 + 2 : 0};
    const BertLora* lora = full_ ? nullptr : &lora_;
    BertGrads* grads = full_ ? &grads_ : nullptr;
    const int64_t L = int64_t(model_.layers.size());
    const bool teacher_pass = !opt.teacher_en;
    BertActs acts_en, acts_xx;
    acts_en.checkpointing = acts_xx.checkpointing = opt.checkpointing;
    model_.begin_acts(acts_en, ben.ids, ben.mask, ben.B, ben.T);
    model_.begin_acts(acts_xx, bxx.ids, bxx.mask, bxx.B, bxx.T);
    unit_acquire(units_, 0, L > 0 ? 1 : -1);
    Tensor x_en = model_.embed(ben.ids, ben.B, ben.T), x_xx = model_.embed(bxx.ids, bxx.B, bxx.T), x_t;
    if (teacher_pass) x_t = x_en;
    if (L > 0) unit_release(units_, 0);
    for (int64_t l = 0; l < L; ++l) {
      // The next unit: the following layer, or for the last layer the one backward needs after it.
      unit_acquire(units_, int(1 + l), l + 1 < L ? int(2 + l) : L > 1 ? int(L - 1) : -1);
      if (teacher_pass) model_.layer_forward(l, x_t, ben.mask, ben.B, ben.T, nullptr, {}, nullptr);
      model_.layer_forward_kept(l, x_en, acts_en, lora, run_en);
      model_.layer_forward_kept(l, x_xx, acts_xx, lora, run_xx);
      if (l + 1 < L) unit_release(units_, int(1 + l));
    }
    const int64_t C = model_.cfg.hidden_size;  // x_*: (B*T, C)
    const Tensor t_en = teacher_pass ? mean_pool(x_t, ben.mask, ben.B, ben.T) : *opt.teacher_en;
    const Tensor s_en = mean_pool(x_en, ben.mask, ben.B, ben.T);
    const Tensor s_xx = mean_pool(x_xx, bxx.mask, bxx.B, bxx.T);
    KdLossTerms out;
    Tensor d_en(s_en.shape), d_xx(s_xx.shape);
    const int64_t n = s_en.numel();
    const float w = 0.5f * opt.loss_scale;
    out.loss_en = ops::mse_loss(s_en.ptr(), t_en.ptr(), d_en.ptr(), n, w) / w;
    out.loss_xx = ops::mse_loss(s_xx.ptr(), t_en.ptr(), d_xx.ptr(), n, w) / w;
    out.loss = 0.5 * (out.loss_en + out.loss_xx);
    Tensor dx_en = mean_pool_backward(d_en, ben.mask, ben.B, ben.T);
    Tensor dx_xx = mean_pool_backward(d_xx, bxx.mask, bxx.B, bxx.T);
    dx_en.reshape({ben.B * ben.T, C});
    dx_xx.reshape({bxx.B * bxx.T, C});
    for (int64_t l = L - 1; l >= 0; --l) {
      if (l + 1 < L) unit_acquire(units_, int(1 + l), l > 0 ? int(l) : -1);
      model_.layer_backward(l, acts_en, dx_en, lora_, run_en, grads);
      model_.layer_backward(l, acts_xx, dx_xx, lora_, run_xx, grads);
      unit_release(units_, int(1 + l));
    }
    if (grads) {  // trainable 'full': nothing is frozen, there are no units
      model_.embeddings_backward(acts_en, dx_en, *grads);
      model_.embeddings_backward(acts_xx, dx_xx, *grads);
    }
    return out;
  }

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
    if (defer_) {  // each unit read from the checkpoint when the wrapper asks
      auto ws = std::make_shared<const WeightStore>(WeightStore::open_dir(dir_));
      const std::string pre = ws->has("bert.embeddings.word_embeddings.weight") ? "bert." : "";
      std::map<const Tensor*, std::string> names;
      for_each_weight(m, [&](const std::string& n, Tensor& t) { names[&t] = n; });
      for (WeightUnit& w : u) {
        std::vector<std::vector<std::string>> src;
        for (const Tensor* t : w.tensors) src.push_back(checkpoint_names(names.at(t), pre));
        w.load = checkpoint_loader(ws, w.tensors, std::move(src));
      }
    }
    return u;
  }
  void set_unit_access(UnitAccess* access) override { units_ = full_ ? nullptr : access; }

  // With trainable 'full', the current weights: the original model's embeddings only before the first update.
  Tensor teacher_embed(const std::vector<TrainPair>& batch) override {
    std::vector<std::string> en;
    for (const auto& p : batch) en.push_back(p.text_en);
    const Batch b = tokenize(*tok_, en, int32_t(model_.cfg.pad_token_id), model_.cfg.max_seq_length, "English");
    return mean_pool(model_.forward(b.ids, b.mask, b.B, b.T), b.mask, b.B, b.T);
  }

  Tensor student_embed(const std::vector<std::string>& texts, bool normalize) override {
    const Batch b = tokenize(*tok_, texts, int32_t(model_.cfg.pad_token_id), model_.cfg.max_seq_length, "input");
    Tensor e = mean_pool(model_.forward(b.ids, b.mask, b.B, b.T, full_ ? nullptr : &lora_), b.mask, b.B, b.T);
    if (normalize) ops::l2_normalize(e.ptr(), e.dim(0), e.dim(1));
    return e;
  }

  void save_adapter(const std::string& dir) const override;
  void load_adapter(const std::string& dir) override;
  void save_merged(const std::string& dir) const override;

 private:
  std::string arch_ = "bert";
  std::string dir_;  // the base model folder
  LoraConfig lcfg_;  // the adapters' config (as loaded by load_adapter, after one)
  uint64_t seed_ = 0;
  bool defer_ = false;  // the frozen base is shape-only until a sharding wrapper reads it (frozen_units)
  BertModel model_;
  std::unique_ptr<Tokenizer> tok_;
  BertLora lora_;     // empty with trainable 'full'
  bool full_ = false;  // trainable 'full': every base weight trains, into grads_
  BertGrads grads_;
  UnitAccess* units_ = nullptr;  // set by a sharding wrapper (frozen_units)

  void save_merged_full(const std::string& dir) const;

  // fn(name, tensor) for every weight, named as Hugging Face's BertModel does (no "bert." prefix) but for the
  // fused attention projection, "encoder.layer.N.attention.self.qkv.weight" / ".bias" (see the top). The same
  // walk over the model and over its gradients (BertGrads), whose fields carry the same names.
  template <typename M, typename F>
  static void for_each_weight(M& m, F fn) {
    fn("embeddings.word_embeddings.weight", m.word_emb);
    fn("embeddings.position_embeddings.weight", m.pos_emb);
    fn("embeddings.token_type_embeddings.weight", m.type_emb);
    fn("embeddings.LayerNorm.weight", m.emb_ln_g);
    fn("embeddings.LayerNorm.bias", m.emb_ln_b);
    for (size_t l = 0; l < m.layers.size(); ++l) {
      auto& L = m.layers[l];
      const std::string p = "encoder.layer." + std::to_string(l) + ".";
      fn(p + "attention.self.qkv.weight", L.qkv_w);
      fn(p + "attention.self.qkv.bias", L.qkv_b);
      fn(p + "attention.output.dense.weight", L.ao_w);
      fn(p + "attention.output.dense.bias", L.ao_b);
      fn(p + "attention.output.LayerNorm.weight", L.ln1_g);
      fn(p + "attention.output.LayerNorm.bias", L.ln1_b);
      fn(p + "intermediate.dense.weight", L.i_w);
      fn(p + "intermediate.dense.bias", L.i_b);
      fn(p + "output.dense.weight", L.o_w);
      fn(p + "output.dense.bias", L.o_b);
      fn(p + "output.LayerNorm.weight", L.ln2_g);
      fn(p + "output.LayerNorm.bias", L.ln2_b);
    }
  }
  // The checkpoint tensors (with the checkpoint's prefix `pre`) a weight of for_each_weight is made of: itself,
  // or query/key/value for the fused projection.
  static std::vector<std::string> checkpoint_names(const std::string& name, const std::string& pre) {
    const size_t q = name.find("attention.self.qkv.");
    if (q == std::string::npos) return {pre + name};
    const std::string stem = pre + name.substr(0, q) + "attention.self.", kind = name.substr(name.rfind('.'));
    return {stem + "query" + kind, stem + "key" + kind, stem + "value" + kind};
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

const std::vector<std::string> kMergedRequired = {"config.json", "tokenizer.json"};
const std::vector<std::string> kMergedOptional = {"sentence_bert_config.json", "tokenizer_config.json",
                                                  "special_tokens_map.json",   "vocab.txt",
                                                  "modules.json",              "config_sentence_transformers.json"};

// ---- Adapter and merged-model export/import (PEFT's formats: core/peft_adapter) ----

void BertKdModel::save_adapter(const std::string& dir) const {
  XV_CHECK(!full_, "{}: full fine-tuning has no adapter; export the merged model instead", dir);
  std::vector<const LoraAdapter*> as;
  for (const auto& a : lora_.adapters) as.push_back(&a);
  save_peft_adapter(dir, as, lcfg_, dir_);
}

void BertKdModel::load_adapter(const std::string& dir) {
  XV_CHECK(!full_, "{}: cannot load an adapter into a model with trainable 'full' (full fine-tuning has no adapter)",
           dir);
  std::string w_path;
  const LoraConfig c = read_peft_adapter_config(dir, &w_path);
  BertLora lora;
  try {
    lora = BertLora::create(model_, c, seed_);
  } catch (const Error& e) {
    fail("{}/adapter_config.json: {}", dir, e.what());
  }
  load_peft_tensors(w_path, lora.adapters, {"bert."});
  lora_ = std::move(lora);
  lcfg_ = c;
}

void BertKdModel::save_merged(const std::string& out) const {
  if (full_) return save_merged_full(out);
  const WeightStore ws = WeightStore::open_dir(dir_);
  const std::string pre = ws.has("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  std::map<std::string, const LoraAdapter*> adapted;
  for (const auto& a : lora_.adapters) adapted[pre + a.module + ".weight"] = &a;
  // The rest of the folder: config, tokenizer, and the sentence-transformers files and module folders.
  save_merged_model(dir_, out, adapted, kMergedRequired, kMergedOptional, true);
}

// The current weights as the base checkpoint's model.safetensors: every tensor keeps its name and dtype (the
// fused qkv split back into query/key/value); tensors the model does not use (pooler, ...) are copied as they
// are. The other files come from the base folder, as for a LoRA merge.
void BertKdModel::save_merged_full(const std::string& out) const {
  const WeightStore ws = WeightStore::open_dir(dir_);
  const std::string pre = ws.has("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  std::map<std::string, Tensor> cur;  // checkpoint name -> current f32 value
  for_each_weight(model_, [&](const std::string& name, const Tensor& w) {
    const std::vector<std::string> parts = checkpoint_names(name, pre);
    if (parts.size() == 1) {
      cur[parts[0]] = w;
      return;
    }
    const int64_t rows = w.dim(0) / 3, cols = w.ndim() == 2 ? w.dim(1) : 1;  // fused q/k/v back into three
    for (int64_t k = 0; k < 3; ++k) {
      Tensor t = w.ndim() == 2 ? Tensor({rows, cols}) : Tensor({rows});
      std::copy(w.data.begin() + k * rows * cols, w.data.begin() + (k + 1) * rows * cols, t.data.begin());
      cur[parts[size_t(k)]] = std::move(t);
    }
  });
  save_model_with_weights(dir_, out, cur, kMergedRequired, kMergedOptional, true);
}

}  // namespace

std::unique_ptr<KdModel> make_phi3v_kd_model(const std::string& dir, const std::string& trainable,
                                             const LoraConfig& lora, uint64_t seed, bool defer_frozen);

std::unique_ptr<KdModel> KdModel::load(const std::string& model_dir, const std::string& trainable,
                                       const LoraConfig& lora, uint64_t seed, bool defer_frozen) {
  const std::string mt = read_model_type((fs::path(model_dir) / "config.json").string());
  if (mt == "bert") return std::make_unique<BertKdModel>(model_dir, trainable, lora, seed, defer_frozen);
  if (mt == "phi3_v") return make_phi3v_kd_model(model_dir, trainable, lora, seed, defer_frozen);
  fail("{}/config.json: field 'model_type' is '{}', expected 'bert' or 'phi3_v'", model_dir, mt);
}

}  // namespace xv
