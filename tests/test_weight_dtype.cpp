// model.weight_dtype: bf16. The frozen base is stored in bf16 (half the bytes) and the CPU computes in f32 on
// its widened values, so a model loaded with weight_dtype bf16 must train exactly as its twin whose f32 weights
// are those bf16 values (a model folder written here), bit for bit: one unit at a time (WidenedUnits, as the
// trainer installs it), per op without a unit access, and through `train` end to end. Also the config key's two
// YAML forms and its errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/safetensors.h"
#include "kernels/ops.h"
#include "models/kd/kd_model.h"
#include "models/peft_adapter.h"
#include "models/unit_store.h"
#include "train/train_config.h"
#include "train/trainer.h"

namespace {

namespace fs = std::filesystem;
const std::string kFix = XV_FIXTURES;
const std::string kSrc = XV_SOURCE_DIR;

std::string tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("xv_wdtype_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

// A copy of a model folder whose f32 weights are rounded to bf16 (and stored in f32 again).
std::string bf16_twin(const std::string& model, const std::vector<std::string>& optional) {
  const std::string out = tmp_dir("twin_" + model);
  const std::string src = kFix + "/models/" + model;
  const xv::WeightStore ws = xv::WeightStore::open_dir(src);
  auto round = [&](const std::string& name, xv::Tensor* t) {
    *t = ws.get(name, ws.info(name).shape, xv::DType::BF16);
    return true;
  };
  xv::save_model_like(src, out, round, {"config.json", "tokenizer.json"}, optional, false);
  return out;
}

struct Step {
  xv::KdLossTerms terms;
  std::vector<std::vector<float>> grads;
};

Step step(xv::KdModel& m, const std::vector<xv::TrainPair>& pairs) {
  xv::KdStepOptions o;
  o.dropout_seed = 7;
  o.checkpointing = true;
  m.zero_grad();
  Step s;
  s.terms = m.forward_backward(pairs, o);
  for (const auto& t : m.trainable()) s.grads.push_back(t.grad->to_vector());
  return s;
}

void expect_same(const Step& a, const Step& b, const std::string& what) {
  EXPECT_TRUE(std::isfinite(a.terms.loss)) << what;
  EXPECT_EQ(a.terms.loss, b.terms.loss) << what;
  EXPECT_EQ(a.terms.loss_en, b.terms.loss_en) << what;
  EXPECT_EQ(a.terms.loss_xx, b.terms.loss_xx) << what;
  ASSERT_EQ(a.grads.size(), b.grads.size()) << what;
  for (size_t i = 0; i < a.grads.size(); ++i) ASSERT_EQ(a.grads[i], b.grads[i]) << what << ": trainable " << i;
}

struct Case {
  std::string model;
  std::vector<std::string> targets, optional;
  std::vector<xv::TrainPair> pairs;
};

std::vector<Case> cases() {
  return {
      {"tiny_bert",
       {"query", "key", "value", "dense"},
       {},
       {{"Cannot open the file.", "Impossibile aprire il file.", "it", ""},
        {"Permission denied", "Permiso denegado", "es", ""}}},
      {"tiny_phi3v",
       {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "q_proj", "k_proj", "v_proj", "out_proj"},
       {"preprocessor_config.json"},
       {{"<|image_1|> Represent the given image.", "<|image_1|> Rappresenta l'immagine data.", "",
         kFix + "/images/tiny_50x30.png"},
        {"A pair without an image", "Una coppia senza immagine", "", ""}}},
  };
}

}  // namespace

TEST(WeightDtype, Bf16BaseTrainsAsItsRoundedTwinUnitByUnitAndPerOp) {
  for (const Case& c : cases()) {
    const std::string twin = bf16_twin(c.model, c.optional);
    xv::LoraConfig lc;
    lc.r = 4, lc.alpha = 8, lc.dropout = 0.1f;
    lc.targets = c.targets;
    auto ref = xv::KdModel::load(twin, "lora", lc, 5);
    xv::LoadOptions bf16;
    bf16.weight_dtype = xv::DType::BF16;
    auto per_op = xv::KdModel::load(kFix + "/models/" + c.model, "lora", lc, 5, bf16);
    auto per_unit = xv::KdModel::load(kFix + "/models/" + c.model, "lora", lc, 5, bf16);
    // The frozen base of the bf16 models is bf16, and half the twin's bytes.
    int64_t f32_bytes = 0;
    for (const auto& u : ref->frozen_units({}))
      for (const xv::Tensor* t : u.tensors) {
        f32_bytes += int64_t(t->nbytes());
        EXPECT_EQ(t->dtype(), xv::DType::F32);
      }
    xv::WidenedUnits units(per_unit->frozen_units({}));
    for (const auto& u : per_unit->frozen_units({}))
      for (const xv::Tensor* t : u.tensors) EXPECT_EQ(t->dtype(), xv::DType::BF16) << c.model << ": " << u.name;
    EXPECT_EQ(units.resident_bytes() * 2, f32_bytes) << c.model;
    {  // an acquired unit is f32, released bf16 again
      const auto us = per_unit->frozen_units({});
      units.acquire(0, -1);
      EXPECT_EQ(us[0].tensors[0]->dtype(), xv::DType::F32) << c.model;
      EXPECT_GT(units.widened_bytes(), 0) << c.model;
      units.release(0);
      EXPECT_EQ(us[0].tensors[0]->dtype(), xv::DType::BF16) << c.model;
    }
    per_unit->set_unit_access(&units);
    const Step want = step(*ref, c.pairs);
    expect_same(step(*per_op, c.pairs), want, c.model + ", widened per op");
    expect_same(step(*per_unit, c.pairs), want, c.model + ", widened per unit");
    EXPECT_EQ(units.widened_bytes(), 0) << c.model << ": every unit released after the step";
    for (const auto& u : per_unit->frozen_units({}))
      for (const xv::Tensor* t : u.tensors) EXPECT_EQ(t->dtype(), xv::DType::BF16) << "released back to bf16";
    // The trainable tensors stay f32.
    for (const auto& t : per_unit->trainable()) EXPECT_EQ(t.value->dtype(), xv::DType::F32) << t.name;
    fs::remove_all(twin);
  }
}

// `xvlm2vec train` with model.weight_dtype bf16 on one process gives, bit for bit, the adapter of the f32 run of
// the rounded twin; the resolved config records the key and a resume must keep it.
TEST(WeightDtype, TrainWithABf16BaseEqualsTheTwinRun) {
  xv::ops::set_num_threads(1);
  const std::string twin = bf16_twin("tiny_bert", {});
  auto run = [&](const std::string& model, const std::string& dtype, const std::string& tag) {
    const std::string out = tmp_dir(tag);
    xv::TrainConfig c = xv::load_train_config(kSrc + "/configs/tiny-bert.yaml",
                                              {"model=" + model, "data.train=" + kFix + "/train/pairs_tiny.jsonl",
                                               "output_dir=" + out, "train.max_steps=3", "model.weight_dtype=" + dtype});
    xv::TrainOptions o;
    o.quiet = true;
    const xv::TrainSummary s = xv::train(c, o);
    EXPECT_TRUE(s.finished);
    std::ifstream f(out + "/adapter/adapter_model.safetensors", std::ios::binary);
    return std::make_pair(out, std::string(std::istreambuf_iterator<char>(f), {}));
  };
  const auto [out_bf16, adapter_bf16] = run(kFix + "/models/tiny_bert", "bf16", "bf16");
  const auto [out_twin, adapter_twin] = run(twin, "f32", "twin");
  ASSERT_FALSE(adapter_bf16.empty());
  EXPECT_EQ(adapter_bf16, adapter_twin);
  const xv::TrainConfig resolved = xv::load_train_config(out_bf16 + "/config.yaml");
  EXPECT_EQ(resolved.model_weight_dtype, "bf16");
  EXPECT_EQ(resolved.weight_dtype(), xv::DType::BF16);
  for (const auto& d : {out_bf16, out_twin, twin}) fs::remove_all(d);
}

TEST(WeightDtype, ConfigKeyBothFormsAndErrors) {
  const std::string base = "data:\n  train: p.jsonl\noutput_dir: out\n";
  const xv::TrainConfig a = xv::parse_train_config("model:\n  path: m\n  weight_dtype: bf16\n" + base, "c.yaml");
  EXPECT_EQ(a.model, "m");
  EXPECT_EQ(a.model_weight_dtype, "bf16");
  const xv::TrainConfig b = xv::parse_train_config("model: m\n" + base, "c.yaml", {"model.weight_dtype=bf16"});
  EXPECT_EQ(b.model, "m");
  EXPECT_EQ(b.weight_dtype(), xv::DType::BF16);
  EXPECT_EQ(xv::parse_train_config("model: m\n" + base, "c.yaml").weight_dtype(), xv::DType::F32);
  // The resolved YAML writes model as a mapping and reads back the same.
  const xv::TrainConfig back = xv::parse_train_config(xv::train_config_yaml(a), "resolved.yaml");
  EXPECT_EQ(back.model, "m");
  EXPECT_EQ(back.model_weight_dtype, "bf16");
  auto error_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const xv::Error& e) {
      return e.what();
    }
    return "";
  };
  const std::string bad = error_of([&] { xv::parse_train_config("model: m\n" + base, "c.yaml", {"model.weight_dtype=f16"}); });
  EXPECT_NE(bad.find("model.weight_dtype"), std::string::npos) << bad;
  EXPECT_NE(bad.find("f32 or bf16"), std::string::npos) << bad;
  const std::string full = error_of(
      [&] { xv::parse_train_config("model: m\ntrainable: full\n" + base, "c.yaml", {"model.weight_dtype=bf16"}); });
  EXPECT_NE(full.find("trainable 'full'"), std::string::npos) << full;
  const std::string unknown = error_of([&] { xv::parse_train_config("model:\n  path: m\n  dtype: bf16\n" + base, "c.yaml"); });
  EXPECT_NE(unknown.find("c.yaml:3"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("model.dtype"), std::string::npos) << unknown;
}
