// KdModel for the bert backbone: LoRA student over the frozen encoder, mean pooling, teacher = adapters off.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/atomic_dir.h"
#include "core/bert_model.h"
#include "core/file_util.h"
#include "core/kd_model.h"
#include "core/safetensors.h"
#include "core/tokenizer.h"
#include "kernels/ops.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

struct Batch {
  std::vector<int32_t> ids;
  std::vector<float> mask;
  int64_t B = 0, T = 0;
};

Batch tokenize(const Tokenizer& tok, const std::vector<std::string>& texts, int32_t pad, int64_t limit,
               const char* side) {
  std::vector<std::vector<int32_t>> rows;
  Batch b;
  for (size_t i = 0; i < texts.size(); ++i) {
    XV_CHECK(!texts[i].empty(), "pair {}: empty {} text", i + 1, side);
    rows.push_back(tok.encode(texts[i], true));
    XV_CHECK(int64_t(rows.back().size()) <= limit, "pair {}: the {} text has {} tokens, more than the model's {}",
             i + 1, side, rows.back().size(), limit);
    b.T = std::max(b.T, int64_t(rows.back().size()));
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

class BertKdModel : public KdModel {
 public:
  BertKdModel(const std::string& dir, const std::string& trainable, const LoraConfig& lcfg, uint64_t seed)
      : dir_(dir), lcfg_(lcfg), seed_(seed), model_(BertModel::load(dir)),
        tok_(Tokenizer::from_file((fs::path(dir) / "tokenizer.json").string())) {
    XV_CHECK(trainable == "lora", "bert: trainable '{}' is not supported yet (only 'lora')", trainable);
    lora_ = BertLora::create(model_, lcfg, seed);
  }
  const std::string& arch() const override { return arch_; }
  int64_t dim() const override { return model_.cfg.hidden_size; }

  std::vector<TrainableTensor> trainable() override {
    std::vector<TrainableTensor> out;
    for (auto& a : lora_.adapters) {
      out.push_back({a.a_name(), &a.A, &a.dA});
      out.push_back({a.b_name(), &a.B, &a.dB});
    }
    return out;
  }
  void zero_grad() override { lora_.zero_grad(); }

  KdLossTerms forward_backward(const std::vector<TrainPair>& batch, const KdStepOptions& opt) override {
    XV_CHECK(!batch.empty(), "kd step: empty batch");
    std::vector<std::string> en, xx;
    for (size_t i = 0; i < batch.size(); ++i) {
      XV_CHECK(batch[i].image.empty(), "pair {}: the bert backbone takes text only, but an image was given", i + 1);
      en.push_back(batch[i].text_en);
      xx.push_back(batch[i].text_xx);
    }
    const int32_t pad = int32_t(model_.cfg.pad_token_id);
    const Batch ben = tokenize(*tok_, en, pad, model_.cfg.max_seq_length, "English");
    const Batch bxx = tokenize(*tok_, xx, pad, model_.cfg.max_seq_length, "other-language");
    // Teacher: the same weights with adapters off, or the cache's targets.
    Tensor t_en;
    if (opt.teacher_en) {
      XV_CHECK(opt.teacher_en->numel() == ben.B * dim(), "kd step: teacher cache rows do not match the batch");
      t_en = *opt.teacher_en;
    } else {
      t_en = mean_pool(model_.forward(ben.ids, ben.mask, ben.B, ben.T), ben.mask, ben.B, ben.T);
    }
    // Two student passes with independent dropout masks.
    const LoraRun run_en{opt.dropout_seed ? opt.dropout_seed * 2 + 1 : 0};
    const LoraRun run_xx{opt.dropout_seed ? opt.dropout_seed * 2 + 2 : 0};
    BertActs acts_en, acts_xx;
    acts_en.checkpointing = acts_xx.checkpointing = opt.checkpointing;
    const Tensor s_en = mean_pool(model_.forward(ben.ids, ben.mask, ben.B, ben.T, &lora_, &acts_en, run_en),
                                  ben.mask, ben.B, ben.T);
    const Tensor s_xx = mean_pool(model_.forward(bxx.ids, bxx.mask, bxx.B, bxx.T, &lora_, &acts_xx, run_xx),
                                  bxx.mask, bxx.B, bxx.T);
    KdLossTerms out;
    Tensor d_en(s_en.shape), d_xx(s_xx.shape);
    const int64_t n = s_en.numel();
    const float w = 0.5f * opt.loss_scale;
    out.loss_en = ops::mse_loss(s_en.ptr(), t_en.ptr(), d_en.ptr(), n, w) / w;
    out.loss_xx = ops::mse_loss(s_xx.ptr(), t_en.ptr(), d_xx.ptr(), n, w) / w;
    out.loss = 0.5 * (out.loss_en + out.loss_xx);
    model_.backward(acts_en, mean_pool_backward(d_en, ben.mask, ben.B, ben.T), lora_, run_en);
    model_.backward(acts_xx, mean_pool_backward(d_xx, bxx.mask, bxx.B, bxx.T), lora_, run_xx);
    return out;
  }

  Tensor teacher_embed(const std::vector<TrainPair>& batch) override {
    std::vector<std::string> en;
    for (const auto& p : batch) en.push_back(p.text_en);
    const Batch b = tokenize(*tok_, en, int32_t(model_.cfg.pad_token_id), model_.cfg.max_seq_length, "English");
    return mean_pool(model_.forward(b.ids, b.mask, b.B, b.T), b.mask, b.B, b.T);
  }

  Tensor student_embed(const std::vector<std::string>& texts, bool normalize) override {
    const Batch b = tokenize(*tok_, texts, int32_t(model_.cfg.pad_token_id), model_.cfg.max_seq_length, "input");
    Tensor e = mean_pool(model_.forward(b.ids, b.mask, b.B, b.T, &lora_), b.mask, b.B, b.T);
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
  BertModel model_;
  std::unique_ptr<Tokenizer> tok_;
  BertLora lora_;
};

// ---- Adapter and merged-model export/import (PEFT's formats) ----

using nlohmann::json;

// A float config value as its shortest decimal (0.1f is written 0.1, as PEFT writes the Python float).
double float_to_json(float v) { return std::stod(fmt::format("{}", v)); }

void BertKdModel::save_adapter(const std::string& dir) const {
  StagingDir stage(dir);
  std::vector<NamedTensor> ts;
  for (const auto& a : lora_.adapters) {
    ts.push_back({a.a_name(), &a.A});
    ts.push_back({a.b_name(), &a.B});
  }
  write_safetensors(stage.file("adapter_model.safetensors"), ts, DType::F32, {{"format", "pt"}});
  // The fields PEFT's LoraConfig writes (defaults where this trainer has no such option); json sorts keys, as
  // PEFT does.
  json c = {{"peft_type", "LORA"},
            {"task_type", nullptr},
            {"base_model_name_or_path", dir_},
            {"revision", nullptr},
            {"inference_mode", true},
            {"r", lcfg_.r},
            {"target_modules", lcfg_.targets},
            {"lora_dropout", float_to_json(lcfg_.dropout)},
            {"fan_in_fan_out", false},
            {"bias", "none"},
            {"use_rslora", lcfg_.rslora},
            {"modules_to_save", nullptr},
            {"init_lora_weights", lcfg_.init == "gaussian" ? json("gaussian") : json(true)},
            {"layers_to_transform", nullptr},
            {"layers_pattern", nullptr},
            {"rank_pattern", json::object()},
            {"alpha_pattern", json::object()},
            {"megatron_config", nullptr},
            {"megatron_core", "megatron.core"},
            {"loftq_config", json::object()},
            {"use_dora", false},
            {"layer_replication", nullptr},
            {"auto_mapping", nullptr}};
  if (lcfg_.alpha == std::floor(lcfg_.alpha) && std::fabs(lcfg_.alpha) < 1e9f)
    c["lora_alpha"] = int64_t(lcfg_.alpha);
  else
    c["lora_alpha"] = float_to_json(lcfg_.alpha);
  write_file_atomic(stage.file("adapter_config.json"), c.dump(2) + "\n");
  stage.commit();
}

void BertKdModel::load_adapter(const std::string& dir) {
  XV_CHECK(fs::is_directory(dir), "{}: adapter folder does not exist", dir);
  const std::string cfg_path = (fs::path(dir) / "adapter_config.json").string();
  const std::string w_path = (fs::path(dir) / "adapter_model.safetensors").string();
  XV_CHECK(fs::is_regular_file(cfg_path), "{}: no adapter_config.json (not a PEFT adapter folder)", dir);
  if (!fs::is_regular_file(w_path)) {
    XV_CHECK(!fs::exists(fs::path(dir) / "adapter_model.bin"),
             "{}: only adapter_model.bin (a pickle) is there: save the adapter with safe_serialization=True", dir);
    fail("{}: no adapter_model.safetensors", dir);
  }
  json j = json::parse(read_file(cfg_path), nullptr, false);
  XV_CHECK(j.is_object(), "{}: not valid JSON (expected an object)", cfg_path);
  auto has = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
  auto number = [&](const char* k) {
    XV_CHECK(has(k) && j[k].is_number(), "{}: field '{}' must be a number", cfg_path, k);
    return j[k].get<double>();
  };
  auto flag = [&](const char* k) {
    if (!has(k)) return false;
    XV_CHECK(j[k].is_boolean(), "{}: field '{}' must be true or false", cfg_path, k);
    return j[k].get<bool>();
  };
  auto empty_or_null = [&](const char* k) { return !has(k) || (j[k].is_object() || j[k].is_array() ? j[k].empty() : false); };
  XV_CHECK(j.value("peft_type", "") == "LORA", "{}: field 'peft_type' is '{}', expected 'LORA'", cfg_path,
           j.contains("peft_type") && j["peft_type"].is_string() ? j["peft_type"].get<std::string>() : "");
  XV_CHECK(!has("bias") || j["bias"] == "none", "{}: field 'bias' must be \"none\" (trained biases are not supported)",
           cfg_path);
  for (const char* k : {"fan_in_fan_out", "use_dora", "lora_bias"})
    XV_CHECK(!flag(k), "{}: field '{}' is true, which is not supported", cfg_path, k);
  for (const char* k : {"modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform", "exclude_modules",
                        "layer_replication"})
    XV_CHECK(empty_or_null(k), "{}: field '{}' is set, which is not supported", cfg_path, k);
  LoraConfig c;
  const double r = number("r");
  XV_CHECK(r >= 1 && r == std::floor(r), "{}: field 'r' must be a positive integer", cfg_path);
  c.r = int64_t(r);
  c.alpha = float(number("lora_alpha"));
  c.dropout = has("lora_dropout") ? float(number("lora_dropout")) : 0.0f;
  c.rslora = flag("use_rslora");
  c.init = has("init_lora_weights") && j["init_lora_weights"] == "gaussian" ? "gaussian" : "kaiming";
  XV_CHECK(has("target_modules"), "{}: field 'target_modules' is missing", cfg_path);
  const json& tm = j["target_modules"];
  // PEFT also accepts one string, a regular expression over the full module names: not supported here (no
  // <regex>: GCC 12 warns inside it under the sanitizers, and the project builds with -Werror).
  XV_CHECK(!tm.is_string(),
           "{}: field 'target_modules' is a regular expression ('{}'), which is not supported: list the module names",
           cfg_path, tm.is_string() ? tm.get<std::string>() : "");
  XV_CHECK(tm.is_array(), "{}: field 'target_modules' must be a list of module names", cfg_path);
  c.targets.clear();
  for (const auto& t : tm) {
    XV_CHECK(t.is_string(), "{}: field 'target_modules' must hold strings", cfg_path);
    c.targets.push_back(t.get<std::string>());
  }
  BertLora lora;
  try {
    lora = BertLora::create(model_, c, seed_);
  } catch (const Error& e) {
    fail("{}: {}", cfg_path, e.what());
  }
  auto ws = WeightStore::open_file(w_path);
  size_t used = 0;
  for (auto& a : lora.adapters) {
    // A task model (BertFor...) puts the encoder under "bert.".
    std::string pa = a.a_name(), pb = a.b_name();
    if (!ws.has(pa) && ws.has("base_model.model.bert." + a.module + ".lora_A.weight")) {
      pa = "base_model.model.bert." + a.module + ".lora_A.weight";
      pb = "base_model.model.bert." + a.module + ".lora_B.weight";
    }
    XV_CHECK(ws.has(pa), "{}: tensor '{}' is missing (target_modules match {})", w_path, pa, a.module);
    XV_CHECK(ws.has(pb), "{}: tensor '{}' is missing (target_modules match {})", w_path, pb, a.module);
    a.A = ws.get(pa, {a.r, a.in});
    a.B = ws.get(pb, {a.out, a.r});
    used += 2;
  }
  if (used != ws.names().size()) {
    std::map<std::string, int> known;
    for (const auto& a : lora.adapters) known[a.module] = 1;
    for (const auto& n : ws.names()) {
      bool ok = false;
      for (const auto& [m, _] : known)
        ok = ok || n == "base_model.model." + m + ".lora_A.weight" || n == "base_model.model." + m + ".lora_B.weight" ||
             n == "base_model.model.bert." + m + ".lora_A.weight" || n == "base_model.model.bert." + m + ".lora_B.weight";
      XV_CHECK(ok, "{}: tensor '{}' belongs to no module that target_modules selects in this model", w_path, n);
    }
  }
  lora_ = std::move(lora);
  lcfg_ = c;
}

// model.safetensors of the merged model: every tensor keeps its name and dtype; the unadapted ones are copied
// byte for byte, the adapted weights are merged in f32 and stored back in their dtype.
void write_merged_safetensors(const std::string& path, const WeightStore& ws,
                              const std::map<std::string, const LoraAdapter*>& adapted) {
  const std::vector<std::string> names = ws.names();
  json h = json::object();
  h["__metadata__"] = {{"format", "pt"}};
  size_t off = 0;
  for (const auto& n : names) {
    const TensorInfo& ti = ws.info(n);
    h[n] = {{"dtype", std::string(dtype_name(ti.dtype))}, {"shape", ti.shape}, {"data_offsets", {off, off + ti.nbytes}}};
    off += ti.nbytes;
  }
  std::string hs = h.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  XV_CHECK(fd >= 0, "{}: cannot create file: {}", path, std::strerror(errno));
  struct Fd {
    int fd;
    ~Fd() { ::close(fd); }
  } guard{fd};
  auto put = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd, c, n);
      XV_CHECK(w > 0, "{}: write failed: {}", path, std::strerror(errno));
      c += w;
      n -= size_t(w);
    }
  };
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t((uint64_t(hs.size()) >> (8 * i)) & 0xff);
  put(len, 8);
  put(hs.data(), hs.size());
  for (const auto& n : names) {
    const TensorInfo& ti = ws.info(n);
    auto it = adapted.find(n);
    if (it == adapted.end()) {
      put(ti.data, ti.nbytes);
      continue;
    }
    XV_CHECK(ti.dtype == DType::F32 || ti.dtype == DType::BF16 || ti.dtype == DType::F16,
             "{}: cannot merge an adapter into '{}' of dtype {}", ws.where(), n, dtype_name(ti.dtype));
    Tensor t = ws.get(n, ti.shape);
    // W (out, in) += scaling * B (out, r) A (r, in), as PEFT's merge: the product first, then scaled, then added.
    const LoraAdapter& a = *it->second;
    for (int64_t o = 0; o < a.out; ++o)
      for (int64_t i = 0; i < a.in; ++i) {
        float d = 0.0f;
        for (int64_t k = 0; k < a.r; ++k) d += a.B.data[size_t(o * a.r + k)] * a.A.data[size_t(k * a.in + i)];
        t.data[size_t(o * a.in + i)] += d * a.scaling;
      }
    if (ti.dtype == DType::F32) {
      put(t.ptr(), ti.nbytes);
    } else {
      std::vector<uint16_t> h16(t.data.size());
      for (size_t i = 0; i < h16.size(); ++i)
        h16[i] = ti.dtype == DType::BF16 ? f32_to_bf16(t.data[i]) : f32_to_f16(t.data[i]);
      put(h16.data(), h16.size() * 2);
    }
  }
  XV_CHECK(::fsync(fd) == 0, "{}: flush failed: {}", path, std::strerror(errno));
}

void BertKdModel::save_merged(const std::string& out) const {
  const WeightStore ws = WeightStore::open_dir(dir_);
  const std::string pre = ws.has("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  std::map<std::string, const LoraAdapter*> adapted;
  for (const auto& a : lora_.adapters) {
    const std::string w = pre + a.module + ".weight";
    XV_CHECK(ws.has(w), "{}: the model has no weight '{}' to merge the adapter into", ws.where(), w);
    adapted[w] = &a;
  }
  StagingDir stage(out);
  write_merged_safetensors(stage.file("model.safetensors"), ws, adapted);
  // The rest of the folder: config, tokenizer, and the sentence-transformers files and module folders.
  const fs::path src(dir_);
  for (const char* f : {"config.json", "tokenizer.json"}) {
    XV_CHECK(fs::is_regular_file(src / f), "{}: {} is missing", dir_, f);
    fs::copy_file(src / f, fs::path(stage.path()) / f);
  }
  for (const char* f : {"sentence_bert_config.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                        "modules.json", "config_sentence_transformers.json"})
    if (fs::is_regular_file(src / f)) fs::copy_file(src / f, fs::path(stage.path()) / f);
  for (const auto& e : fs::directory_iterator(src)) {
    const std::string n = e.path().filename().string();
    const size_t us = n.find('_');
    if (e.is_directory() && us != std::string::npos && us > 0 && n.find_first_not_of("0123456789") == us)
      fs::copy(e.path(), fs::path(stage.path()) / n, fs::copy_options::recursive);
  }
  stage.commit();
}

}  // namespace

std::unique_ptr<KdModel> make_phi3v_kd_model(const std::string& dir, const std::string& trainable,
                                             const LoraConfig& lora, uint64_t seed);

std::unique_ptr<KdModel> KdModel::load(const std::string& model_dir, const std::string& trainable,
                                       const LoraConfig& lora, uint64_t seed) {
  const std::string mt = read_model_type((fs::path(model_dir) / "config.json").string());
  if (mt == "bert") return std::make_unique<BertKdModel>(model_dir, trainable, lora, seed);
  if (mt == "phi3_v") return make_phi3v_kd_model(model_dir, trainable, lora, seed);
  fail("{}/config.json: field 'model_type' is '{}', expected 'bert' or 'phi3_v'", model_dir, mt);
}

}  // namespace xv
