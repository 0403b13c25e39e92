// The self-KD training step on the tiny Phi-3-vision against PyTorch + PEFT (tools/make_train_phi3v_fixtures.py),
// from the same initial LoRA weights (decoder and CLIP adapters, B non-zero): text-only pairs, pairs with an
// image each (one tower pass serving both sides), and the image-prefix variant. Tolerances: step-1 loss terms
// within 1e-5 relative, every LoRA gradient of step 1 within 1e-4 of its largest entry, and the losses of 10
// AdamW steps (clipping, constant learning rate) within 1e-4 relative.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "models/embedder.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"
#include "core/file_util.h"
#include "models/kd/kd_model.h"
#include "train/schedule.h"
#include "core/safetensors.h"

namespace {

using nlohmann::json;
const std::string kFix = XV_FIXTURES;
const std::string kDir = kFix + "/train/tiny_phi3v";
const std::string kModel = kFix + "/models/tiny_phi3v";

// max |got - want| / max |want| over a tensor.
double rel_err(const xv::Tensor& got, const xv::Tensor& want) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    num = std::max(num, double(std::fabs(got.at(int64_t(i)) - want.at(int64_t(i)))));
    den = std::max(den, double(std::fabs(want.at(int64_t(i)))));
  }
  return num / std::max(den, 1e-30);
}

class TrainPhi3VGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { meta_ = new json(json::parse(xv::read_file(kDir + "/meta.json"))); }
  static void TearDownTestSuite() {
    delete meta_;
    meta_ = nullptr;
  }
  const json& meta() const { return *meta_; }
  const json& kase(const std::string& name) const { return meta()["cases"][name]; }

  // The student from the fixture's initial adapters.
  std::unique_ptr<xv::KdModel> make_model(float dropout = 0.0f) const {
    xv::LoraConfig cfg;
    cfg.dropout = dropout;
    cfg.r = meta()["r"].get<int64_t>();
    cfg.alpha = meta()["alpha"].get<float>();
    cfg.targets = meta()["targets"].get<std::vector<std::string>>();
    auto m = xv::KdModel::load(kModel, "lora", cfg, 0);
    auto ws = xv::WeightStore::open_file(kDir + "/lora_init.safetensors");
    for (auto& t : m->trainable()) *t.value = ws.get(t.name, t.value->shape());
    return m;
  }
  // Pairs taken in order, cycling, as the reference does.
  std::vector<xv::TrainPair> batch(const std::string& name, int64_t step) const {
    const json& c = kase(name);
    const json& pairs = c["pairs"];
    const int64_t bs = c["batch"].get<int64_t>(), n = int64_t(pairs.size());
    std::vector<xv::TrainPair> b;
    for (int64_t i = 0; i < bs; ++i) {
      const json& p = pairs[size_t((step * bs + i) % n)];
      xv::TrainPair tp{p[0].get<std::string>(), p[1].get<std::string>(), "", ""};
      if (p.size() > 2) tp.image = kFix + "/" + p[2].get<std::string>();
      b.push_back(tp);
    }
    return b;
  }
  xv::KdStepOptions options(const std::string& name) const {
    xv::KdStepOptions o;
    o.image_prefix_loss = kase(name)["image_prefix"].get<bool>();
    return o;
  }

  // Step 1: the loss terms and every LoRA gradient. Adapters the reference leaves without a gradient (the
  // tower's in a text-only batch) must get exactly zero here.
  void first_step(const std::string& name, bool checkpointing) {
    auto model = make_model();
    model->zero_grad();
    xv::KdStepOptions o = options(name);
    o.checkpointing = checkpointing;
    const auto terms = model->forward_backward(batch(name, 0), o);
    const json& ref = kase(name)["trace"][0];
    auto near = [&](double got, const char* key) {
      const double want = ref[key].get<double>();
      EXPECT_NEAR(got, want, 1e-5 * std::fabs(want)) << name << ": " << key;
      return std::fabs(got - want) / std::fabs(want);
    };
    double worst_loss = near(terms.loss, "loss");
    worst_loss = std::max(worst_loss, near(terms.loss_en, "loss_en"));
    worst_loss = std::max(worst_loss, near(terms.loss_xx, "loss_xx"));
    if (ref.contains("prefix_en")) {
      worst_loss = std::max(worst_loss, near(terms.prefix_en, "prefix_en"));
      worst_loss = std::max(worst_loss, near(terms.prefix_xx, "prefix_xx"));
    } else {
      EXPECT_EQ(terms.prefix_en, 0.0);
      EXPECT_EQ(terms.prefix_xx, 0.0);
    }
    auto g = xv::WeightStore::open_file(kDir + "/grads_" + name + ".safetensors");
    double worst = 0;
    int compared = 0;
    for (const auto& t : model->trainable()) {
      if (!g.has(t.name)) {
        for (float v : t.grad->to_vector()) ASSERT_EQ(v, 0.0f) << name << ": " << t.name << " should get no gradient";
        continue;
      }
      const double e = rel_err(*t.grad, g.get(t.name, t.grad->shape()));
      EXPECT_LE(e, 1e-4) << name << ": " << t.name;
      worst = std::max(worst, e);
      ++compared;
    }
    EXPECT_EQ(size_t(compared), g.names().size()) << name << ": every reference gradient has its twin";
    std::printf("%s%s step 1: loss %.8f (reference %.8f), worst loss-term error %.2e, worst LoRA gradient error "
                "%.2e over %d tensors\n",
                name.c_str(), checkpointing ? " (checkpointing)" : "", terms.loss, ref["loss"].get<double>(),
                worst_loss, worst, compared);
  }

  // AdamW over the case's steps: losses and gradient norms against the reference trace.
  void adamw_steps(const std::string& name) {
    auto model = make_model();
    xv::ops::AdamWParams oc;
    oc.lr = meta()["lr"].get<float>();
    oc.beta1 = meta()["betas"][0].get<float>();
    oc.beta2 = meta()["betas"][1].get<float>();
    oc.eps = meta()["eps"].get<float>();
    oc.weight_decay = meta()["weight_decay"].get<float>();
    // The trainer's optimizer on one process (parallel/fsdp.h): clip_grad_norm_ and AdamW through the op set.
    auto comm = xv::par::make_self_communicator();
    xv::par::TrainableOptions to;
    to.world = comm.get();
    xv::par::TrainableShards opt(model->trainable(), oc, to);
    const json& trace = kase(name)["trace"];
    const int64_t steps = int64_t(trace.size());
    double worst = 0;
    for (int64_t s = 0; s < steps; ++s) {
      model->zero_grad();
      const auto terms = model->forward_backward(batch(name, s), options(name));
      const double lr = oc.lr * xv::lr_lambda(meta()["schedule"].get<std::string>(), s, 0, steps);
      const double norm = opt.step(float(lr), meta()["clip"].get<double>());
      const auto& ref = trace[size_t(s)];
      const double want = ref["loss"].get<double>();
      EXPECT_NEAR(terms.loss, want, 1e-4 * want) << name << " step " << s + 1;
      EXPECT_NEAR(norm, ref["grad_norm"].get<double>(), 1e-4 * ref["grad_norm"].get<double>())
          << name << " step " << s + 1;
      worst = std::max(worst, std::fabs(terms.loss - want) / want);
    }
    std::printf("%s: %lld AdamW steps, worst loss error %.2e\n", name.c_str(), static_cast<long long>(steps), worst);
  }

 private:
  static json* meta_;
};
json* TrainPhi3VGolden::meta_ = nullptr;

TEST_F(TrainPhi3VGolden, LoraTargetsMatchPeft) {
  // PEFT's adapters, less those of the tower's last layer, which feeds nothing (hidden state -2).
  auto ws = xv::WeightStore::open_file(kDir + "/lora_init.safetensors");
  std::set<std::string> want;
  for (const auto& n : ws.names()) want.insert(n);
  for (const auto& n : meta()["no_grad"]) want.erase(n.get<std::string>());
  auto model = make_model();
  std::set<std::string> got;
  for (const auto& t : model->trainable()) got.insert(t.name);
  EXPECT_EQ(got, want);
}

TEST_F(TrainPhi3VGolden, FirstStepTextOnly) { first_step("text", false); }
TEST_F(TrainPhi3VGolden, FirstStepWithImages) { first_step("image", false); }
TEST_F(TrainPhi3VGolden, FirstStepImagePrefix) { first_step("prefix", false); }
TEST_F(TrainPhi3VGolden, FirstStepWithImagesCheckpointed) { first_step("image", true); }

TEST_F(TrainPhi3VGolden, AdamWStepsTextOnly) { adamw_steps("text"); }
TEST_F(TrainPhi3VGolden, AdamWStepsWithImages) { adamw_steps("image"); }

// Checkpointing recomputes each layer with the same ops: the gradients are bit-identical. loss_scale scales
// them.
TEST_F(TrainPhi3VGolden, CheckpointingAndLossScale) {
  auto a = make_model(), b = make_model();
  const auto pairs = batch("prefix", 0);
  xv::KdStepOptions o = options("prefix");
  a->zero_grad();
  const auto ta = a->forward_backward(pairs, o);
  o.checkpointing = true;
  o.loss_scale = 0.5f;
  b->zero_grad();
  const auto tb = b->forward_backward(pairs, o);
  EXPECT_EQ(ta.loss, tb.loss);
  auto ga = a->trainable(), gb = b->trainable();
  ASSERT_EQ(ga.size(), gb.size());
  for (size_t i = 0; i < ga.size(); ++i) {
    const std::vector<float> a_i = ga[i].grad->to_vector(), b_i = gb[i].grad->to_vector();
    for (size_t j = 0; j < a_i.size(); ++j) ASSERT_EQ(a_i[j] * 0.5f, b_i[j]) << ga[i].name;
  }
}

// Seeded LoRA dropout: a pure function of the seed, so the checkpointed backward recomputes the same masks
// (bit-identical gradients); seed 0 turns it off.
TEST_F(TrainPhi3VGolden, SeededDropoutSurvivesCheckpointing) {
  const auto pairs = batch("image", 0);
  auto run = [&](uint64_t seed, bool ckpt) {
    auto m = make_model(0.1f);
    m->zero_grad();
    xv::KdStepOptions o;
    o.dropout_seed = seed;
    o.checkpointing = ckpt;
    const double loss = m->forward_backward(pairs, o).loss;
    std::vector<float> g;
    for (const auto& t : m->trainable()) {
      const std::vector<float> v = t.grad->to_vector();
      g.insert(g.end(), v.begin(), v.end());
    }
    return std::make_pair(loss, g);
  };
  const auto a = run(11, false), b = run(11, true), off = run(0, false);
  EXPECT_EQ(a.first, b.first);
  EXPECT_EQ(a.second, b.second);
  EXPECT_NE(a.first, off.first);
  EXPECT_NEAR(off.first, kase("image")["trace"][0]["loss"].get<double>(), 1e-5 * off.first);
}

// The teacher (adapters off) is the inference model: its English embeddings are the embedder's.
TEST_F(TrainPhi3VGolden, TeacherIsTheEmbedder) {
  auto model = make_model();
  const auto pairs = batch("image", 0);
  const xv::Tensor t = model->teacher_embed(pairs);
  auto emb = xv::Embedder::load(kModel);
  std::vector<xv::EmbedItem> items;
  for (const auto& p : pairs) items.push_back({p.text_en, p.image});
  xv::EmbedOptions eo;
  eo.normalize = false;
  EXPECT_LE(rel_err(t, emb->embed(items, eo)), 1e-5);
}

// Bad input names what is wrong, and where.
TEST_F(TrainPhi3VGolden, BadInputIsAnError) {
  auto expect_error = [](auto fn, const std::string& part) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one containing: " << part;
    } catch (const xv::Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  xv::LoraConfig none;
  none.targets = {"lm_head"};
  expect_error([&] { xv::KdModel::load(kModel, "lora", none, 0); }, "match no Linear layer");
  expect_error([&] { xv::KdModel::load(kModel, "partial", xv::LoraConfig{}, 0); }, "(lora or full)");
  auto model = make_model();
  auto pairs = batch("image", 0);
  pairs[1].text_xx = "<|image_2|> two images?";
  expect_error([&] { model->forward_backward(pairs, {}); }, "pair 2: the other-language text");
  pairs = batch("text", 0);
  pairs[0].image = kFix + "/images/does_not_exist.png";
  expect_error([&] { model->forward_backward(pairs, {}); }, "does_not_exist.png");
}

}  // namespace
