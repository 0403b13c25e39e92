// The KD step's unit brackets (core/units.h), for both backbones: with a UnitAccess that fills every
// released unit with NaN and puts the weights back on acquire, a step must give the same losses and gradients,
// bit for bit, as without one (a weight read outside its bracket would turn them NaN). Also: each unit is
// acquired once per forward (the teacher and both students share it), the decoder/encoder layers once more in
// backward but the last (kept), the tower and projector again only when the tower trains, and walked without
// images when KdStepOptions::vision_units says another rank may have some; every prefetch hint
// names the unit acquired next; nothing is held after the step; the units hold every frozen weight once.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "models/kd/kd_model.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"

namespace {

const std::string kFix = XV_FIXTURES;

class PoisonAccess : public xv::UnitAccess {
 public:
  explicit PoisonAccess(std::vector<xv::WeightUnit> units) : units_(std::move(units)) {
    for (const auto& u : units_) {
      std::vector<xv::Tensor> saved;
      for (const xv::Tensor* t : u.tensors) saved.push_back(*t);
      saved_.push_back(std::move(saved));
    }
    for (size_t u = 0; u < units_.size(); ++u) poison(u);
  }
  void acquire(int u, int next) override {
    ASSERT_TRUE(u >= 0 && size_t(u) < units_.size()) << u;  // (returns from acquire only)
    EXPECT_FALSE(held_.count(u)) << units_[size_t(u)].name << " acquired twice";
    if (expect_next_ != -2) {
      EXPECT_EQ(u, expect_next_) << "the prefetch hint named another unit";
    }
    expect_next_ = next;
    held_.insert(u);
    for (size_t i = 0; i < units_[size_t(u)].tensors.size(); ++i)
      *units_[size_t(u)].tensors[i] = saved_[size_t(u)][i];
    ++acquires_[units_[size_t(u)].name];
  }
  void release(int u) override {
    held_.erase(u);
    poison(size_t(u));
  }
  // Before a step: no hint pending.
  void begin_step() {
    expect_next_ = -2;
    acquires_.clear();
  }
  int last_hint() const { return expect_next_; }
  const std::set<int>& held() const { return held_; }
  const std::map<std::string, int>& acquires() const { return acquires_; }

 private:
  void poison(size_t u) {
    for (xv::Tensor* t : units_[u].tensors)
      *t = xv::Tensor::filled(t->shape(), std::numeric_limits<float>::quiet_NaN(), t->dtype(), t->device());
  }
  std::vector<xv::WeightUnit> units_;
  std::vector<std::vector<xv::Tensor>> saved_;
  std::set<int> held_;
  std::map<std::string, int> acquires_;
  int expect_next_ = -2;
};

struct StepResult {
  xv::KdLossTerms terms;
  std::vector<std::vector<float>> grads;
};

// One micro-batch's forward and backward; gradients accumulate onto what the model holds.
StepResult accumulate(xv::KdModel& m, const std::vector<xv::TrainPair>& pairs, const xv::KdStepOptions& o) {
  StepResult r;
  r.terms = m.forward_backward(pairs, o);
  for (const auto& t : m.trainable()) r.grads.push_back(t.grad->to_vector());
  return r;
}

StepResult step(xv::KdModel& m, const std::vector<xv::TrainPair>& pairs, const xv::KdStepOptions& o) {
  m.zero_grad();
  return accumulate(m, pairs, o);
}

void expect_same(const StepResult& a, const StepResult& b, const std::string& what) {
  EXPECT_EQ(a.terms.loss, b.terms.loss) << what;
  EXPECT_EQ(a.terms.loss_en, b.terms.loss_en) << what;
  EXPECT_EQ(a.terms.loss_xx, b.terms.loss_xx) << what;
  EXPECT_EQ(a.terms.prefix_en, b.terms.prefix_en) << what;
  EXPECT_EQ(a.terms.prefix_xx, b.terms.prefix_xx) << what;
  EXPECT_TRUE(std::isfinite(a.terms.loss)) << what;
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) ASSERT_EQ(a.grads[i], b.grads[i]) << what << ": trainable " << i;
}

std::unique_ptr<xv::KdModel> load(const std::string& model, const std::string& trainable,
                                  std::vector<std::string> targets, float dropout) {
  xv::LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.dropout = dropout;
  c.targets = std::move(targets);
  return xv::KdModel::load(kFix + "/models/" + model, trainable, c, 5);
}

int64_t elements(const std::vector<xv::WeightUnit>& units) {
  int64_t n = 0;
  std::set<const xv::Tensor*> seen;
  for (const auto& u : units)
    for (const xv::Tensor* t : u.tensors) {
      EXPECT_TRUE(seen.insert(t).second) << "a tensor in two units (" << u.name << ")";
      n += t->numel();
    }
  return n;
}

// Every weight full fine-tuning trains is a frozen weight of the LoRA student, in exactly one unit.
void expect_units_cover(const std::string& model, const std::vector<xv::WeightUnit>& units) {
  auto full = load(model, "full", {}, 0.0f);
  int64_t n = 0;
  for (const auto& t : full->trainable()) n += t.value->numel();
  EXPECT_EQ(elements(units), n) << model;
  EXPECT_TRUE(full->frozen_units({}).empty()) << "trainable 'full' has no frozen units";
}

const std::vector<std::string> kPhi3Decoder = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"};
const std::vector<std::string> kPhi3All = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "q_proj",
                                           "k_proj",   "v_proj", "out_proj",     "fc1",       "fc2"};

std::vector<xv::TrainPair> phi3v_pairs(bool images) {
  std::vector<xv::TrainPair> b;
  if (images) {
    b.push_back({"<|image_1|> Represent the given image.", "<|image_1|> Rappresenta l'immagine data.", "",
                 kFix + "/images/tiny_50x30.png"});
    b.push_back({"Represent the given image with the following question: What is shown?",
                 "Representa la imagen dada con la siguiente pregunta: ¿Qué se muestra?", "",
                 kFix + "/images/wide_800x96.png"});
    b.push_back({"A pair without an image", "Una coppia senza immagine", "", ""});
  } else {
    b.push_back({"Cannot open the file.", "Impossibile aprire il file.", "", ""});
    b.push_back({"Permission denied", "Permiso denegado", "", ""});
  }
  return b;
}

}  // namespace

TEST(KdUnits, Phi3VStepUnitByUnitEqualsTheWholeModel) {
  struct Case {
    int64_t per_unit;  // CLIP layers per unit
    bool vision_lora, images, checkpointing, prefix;
    float dropout;
    bool vision_units = false;  // walk the tower's units without images (another rank may have some)
  };
  const Case cases[] = {
      {1, true, true, false, false, 0.0f},   {1, true, true, true, true, 0.1f},   {1, false, true, false, true, 0.0f},
      {1, false, false, false, false, 0.1f}, {1, true, false, true, false, 0.0f}, {8, true, true, false, false, 0.1f},
      {8, false, true, true, false, 0.0f},   {1, true, false, false, false, 0.0f, true},
      {8, false, false, true, false, 0.1f, true}, {1, true, true, false, true, 0.0f, true},
  };
  const int64_t L = 2, Lv = 2;  // tiny_phi3v: 2 decoder layers, 2 CLIP layers run (of 3)
  for (const Case& c : cases) {
    const std::string what =
        fmt::format("{} CLIP layer(s) per unit, {} adapters, {}, checkpointing {}, prefix loss {}, dropout {}, "
                    "vision_units {}",
                    c.per_unit, c.vision_lora ? "decoder+tower" : "decoder", c.images ? "images" : "text",
                    c.checkpointing, c.prefix, c.dropout, c.vision_units);
    const auto& targets = c.vision_lora ? kPhi3All : kPhi3Decoder;
    xv::KdStepOptions o;
    o.checkpointing = c.checkpointing;
    o.image_prefix_loss = c.prefix;
    o.dropout_seed = c.dropout > 0 ? 17 : 0;
    o.loss_scale = 0.5f;
    o.vision_units = c.vision_units;
    const auto pairs = phi3v_pairs(c.images);
    auto plain = load("tiny_phi3v", "lora", targets, c.dropout);
    auto m = load("tiny_phi3v", "lora", targets, c.dropout);
    xv::UnitOptions uo;
    uo.vision_layers_per_unit = c.per_unit;
    const auto units = m->frozen_units(uo);
    ASSERT_EQ(int64_t(units.size()), (Lv + c.per_unit - 1) / c.per_unit + 2 + L) << what;
    PoisonAccess access(units);
    m->set_unit_access(&access);
    access.begin_step();
    expect_same(step(*m, pairs, o), step(*plain, pairs, o), what);
    EXPECT_TRUE(access.held().empty()) << what << ": a unit is still held after the step";
    EXPECT_EQ(access.last_hint(), -1) << what << ": the last acquire hinted at a unit that never came";
    // Acquires per unit: once in forward; decoder layers again in backward but the last; the tower's groups
    // and the projector only with images (or vision_units), again in backward when the tower has adapters.
    const int vis = c.images || c.vision_units ? (c.vision_lora ? 2 : 1) : 0;
    for (const auto& u : units) {
      int want = 1;
      if (u.name.starts_with("clip.") || u.name == "projector") want = vis;
      if (u.name.starts_with("decoder.") && u.name != "decoder." + std::to_string(L - 1)) want = 2;
      const auto it = access.acquires().find(u.name);
      EXPECT_EQ(it == access.acquires().end() ? 0 : it->second, want) << what << ": " << u.name;
    }
    // A second micro-batch accumulates the same way.
    access.begin_step();
    expect_same(accumulate(*m, pairs, o), accumulate(*plain, pairs, o), what + ", second micro-batch");
    if (testing::Test::HasFailure()) return;
  }
}

TEST(KdUnits, Phi3VUnitsHoldEveryFrozenWeightOnce) {
  auto m = load("tiny_phi3v", "lora", kPhi3All, 0.0f);
  xv::UnitOptions uo;
  uo.vision_layers_per_unit = 1;
  const auto units = m->frozen_units(uo);
  std::vector<std::string> names;
  for (const auto& u : units) names.push_back(u.name);
  EXPECT_EQ(names, (std::vector<std::string>{"clip.0-0", "clip.1-1", "projector", "embeddings", "decoder.0",
                                             "decoder.1"}));
  expect_units_cover("tiny_phi3v", units);
  uo.vision_layers_per_unit = 0;
  EXPECT_THROW(m->frozen_units(uo), xv::Error);
}

TEST(KdUnits, BertStepUnitByUnitEqualsTheWholeModel) {
  const std::vector<xv::TrainPair> pairs = {{"Cannot open the file.", "Impossibile aprire il file.", "", ""},
                                            {"Permission denied", "Permiso denegado", "", ""}};
  for (bool checkpointing : {false, true})
    for (float dropout : {0.0f, 0.1f}) {
      const std::string what = fmt::format("checkpointing {}, dropout {}", checkpointing, dropout);
      xv::KdStepOptions o;
      o.checkpointing = checkpointing;
      o.dropout_seed = dropout > 0 ? 5 : 0;
      auto plain = load("tiny_bert", "lora", {"query", "value"}, dropout);
      const StepResult want = step(*plain, pairs, o);
      auto m = load("tiny_bert", "lora", {"query", "value"}, dropout);
      const auto units = m->frozen_units({});
      PoisonAccess access(units);
      m->set_unit_access(&access);
      access.begin_step();
      expect_same(step(*m, pairs, o), want, what);
      EXPECT_TRUE(access.held().empty()) << what;
      EXPECT_EQ(access.last_hint(), -1) << what;
      const int64_t L = int64_t(units.size()) - 1;
      for (const auto& u : units)
        EXPECT_EQ(access.acquires().at(u.name),
                  u.name == "embeddings" || u.name == "layer." + std::to_string(L - 1) ? 1 : 2)
            << what << ": " << u.name;
    }
  auto m = load("tiny_bert", "lora", {"query"}, 0.0f);
  expect_units_cover("tiny_bert", m->frozen_units({}));
}

// A model loaded shape-only (LoadOptions::shapes_only) holds its frozen base shape-only; FrozenShards reads it unit by unit from the
// checkpoint (WeightUnit::load) and the steps equal a model loaded whole, bit for bit (one rank here;
// tests/mpi_train_test.sh runs it at 2, 3 and 4 ranks).
TEST(KdUnits, DeferredLoadReadsEachUnitFromTheCheckpoint) {
  struct Case {
    const char* model;
    std::vector<std::string> targets;
    std::vector<xv::TrainPair> pairs;
  };
  const Case cases[] = {
      {"tiny_bert", {"query", "value", "dense"}, {{"Cannot open the file.", "Impossibile aprire il file.", "", ""}}},
      {"tiny_phi3v", kPhi3All, phi3v_pairs(true)},
  };
  for (const Case& c : cases) {
    xv::LoraConfig lc;
    lc.r = 4;
    lc.alpha = 8;
    lc.targets = c.targets;
    auto plain = xv::KdModel::load(kFix + "/models/" + c.model, "lora", lc, 5);
    xv::LoadOptions defer;
    defer.shapes_only = true;
    auto deferred = xv::KdModel::load(kFix + "/models/" + c.model, "lora", lc, 5, defer);
    auto units = deferred->frozen_units({});
    int64_t whole = 0;
    for (const auto& u : units) {
      EXPECT_TRUE(bool(u.load)) << c.model << ": " << u.name;
      for (const xv::Tensor* t : u.tensors) {
        EXPECT_TRUE(t->shape_only()) << c.model << ": " << u.name << " holds data before it is read";
        whole += xv::shape_numel(t->shape());
      }
    }
    auto comm = xv::par::make_self_communicator();
    xv::par::FrozenShards fs(*comm, units, true);
    EXPECT_EQ(fs.resident_bytes(), whole * int64_t(sizeof(float))) << c.model;
    for (const auto& u : units)
      for (const xv::Tensor* t : u.tensors) EXPECT_TRUE(t->shape_only()) << c.model << ": " << u.name;
    deferred->set_unit_access(&fs);
    for (int s = 0; s < 2; ++s) {
      xv::KdStepOptions o;
      o.dropout_seed = 3 + s;
      expect_same(step(*deferred, c.pairs, o), step(*plain, c.pairs, o), fmt::format("{} step {}", c.model, s + 1));
    }
    // trainable 'full' has no frozen units: shapes_only is ignored and the weights are there.
    auto full = xv::KdModel::load(kFix + "/models/" + c.model, "full", lc, 5, defer);
    for (const auto& t : full->trainable()) EXPECT_FALSE(t.value->empty()) << c.model << ": " << t.name;
  }
}
