// Training-step properties on the tiny BERT that the golden test does not cover: activation
// checkpointing, seeded LoRA dropout, loss scaling for gradient accumulation, teacher-cache targets, and a
// directional finite-difference check of the gradients with dropout on.
#include <gtest/gtest.h>

#include "tests/tensor_values.h"

#include <cmath>

#include "models/kd/kd_model.h"

namespace {

const std::string kModel = std::string(XV_FIXTURES) + "/models/tiny_bert";

std::vector<xv::TrainPair> pairs() {
  return {{"Cannot open the file.", "Impossibile aprire il file.", "it", ""},
          {"Permission denied", "Permiso denegado", "es", ""},
          {"Write error", "Erreur d'écriture", "fr", ""}};
}

std::unique_ptr<xv::KdModel> model(float dropout) {
  xv::LoraConfig c;
  c.r = 4, c.alpha = 8, c.dropout = dropout;
  c.targets = {"query", "key", "value", "dense"};
  auto m = xv::KdModel::load(kModel, "lora", c, 3);
  // Non-zero B, so that every adapter gets a gradient and the student differs from the teacher.
  int k = 0;
  for (auto& t : m->trainable())
    if (t.name.find("lora_B") != std::string::npos)
      xv::test::fill_each(*t.value, [&](size_t) { return 0.01f * float((k++ % 13) - 6); });
  return m;
}

std::vector<std::vector<float>> grads(xv::KdModel& m) {
  std::vector<std::vector<float>> g;
  for (auto& t : m.trainable()) g.push_back(t.grad->to_vector());
  return g;
}

TEST(Train, CheckpointingGivesIdenticalGradients) {
  auto m = model(0.1f);
  xv::KdStepOptions o;
  o.dropout_seed = 11;
  m->zero_grad();
  auto a = m->forward_backward(pairs(), o);
  auto ga = grads(*m);
  o.checkpointing = true;
  m->zero_grad();
  auto b = m->forward_backward(pairs(), o);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(ga, grads(*m));
}

TEST(Train, DropoutIsSeededAndDeterministic) {
  auto m = model(0.2f);
  xv::KdStepOptions o;
  o.dropout_seed = 5;
  m->zero_grad();
  auto a = m->forward_backward(pairs(), o);
  auto ga = grads(*m);
  m->zero_grad();
  auto b = m->forward_backward(pairs(), o);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(ga, grads(*m));
  o.dropout_seed = 6;
  m->zero_grad();
  auto c = m->forward_backward(pairs(), o);
  EXPECT_NE(a.loss, c.loss);
  o.dropout_seed = 0;  // no dropout: the deterministic function
  m->zero_grad();
  auto d = m->forward_backward(pairs(), o);
  EXPECT_NE(a.loss, d.loss);
}

TEST(Train, LossScaleScalesGradientsAndTeacherCacheMatches) {
  auto m = model(0.0f);
  m->zero_grad();
  auto a = m->forward_backward(pairs(), {});
  auto ga = grads(*m);
  xv::KdStepOptions o;
  o.loss_scale = 0.25f;
  const xv::Tensor cached = m->teacher_embed(pairs());
  o.teacher_en = &cached;
  m->zero_grad();
  auto b = m->forward_backward(pairs(), o);
  EXPECT_DOUBLE_EQ(a.loss, b.loss);  // the reported loss is unscaled; the cache holds the same targets
  auto gb = grads(*m);
  for (size_t i = 0; i < ga.size(); ++i)
    for (size_t j = 0; j < ga[i].size(); ++j) ASSERT_NEAR(gb[i][j], 0.25f * ga[i][j], 1e-6f + 1e-5f * std::fabs(ga[i][j]));
}

TEST(Train, GradientMatchesDirectionalFiniteDifference) {
  auto m = model(0.1f);
  xv::KdStepOptions o;
  o.dropout_seed = 9;  // the same mask at every evaluation: a deterministic function of the weights
  m->zero_grad();
  m->forward_backward(pairs(), o);
  auto g = grads(*m);
  // Direction v: a fixed pattern over every trainable element; <grad, v> against (L(w+hv) - L(w-hv)) / 2h.
  auto t = m->trainable();
  double dot = 0;
  std::vector<std::vector<float>> v(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    v[i].resize(size_t(t[i].value->numel()));
    for (size_t j = 0; j < v[i].size(); ++j) {
      v[i][j] = float(int((i * 31 + j * 7) % 17) - 8) / 8.0f;
      dot += double(g[i][j]) * v[i][j];
    }
  }
  const float h = 1e-3f;
  auto loss_at = [&](float s) {
    for (size_t i = 0; i < t.size(); ++i)
      xv::test::add_each(*t[i].value, [&](size_t j) { return s * v[i][j]; });
    m->zero_grad();
    const double l = m->forward_backward(pairs(), o).loss;
    for (size_t i = 0; i < t.size(); ++i)
      xv::test::add_each(*t[i].value, [&](size_t j) { return -s * v[i][j]; });
    return l;
  };
  const double fd = (loss_at(h) - loss_at(-h)) / (2.0 * h);
  EXPECT_NEAR(fd, dot, 2e-2 * std::fabs(dot) + 1e-6) << "finite difference " << fd << " vs gradient " << dot;
}

}  // namespace

#include <filesystem>

#include "models/embedder.h"

namespace {

// phi3_v: the adapter folder round-trips bit-exactly, and the merged model embeds as the student does.
TEST(Train, Phi3VAdapterRoundTripAndMergedModel) {
  namespace fs = std::filesystem;
  xv::LoraConfig c;
  c.r = 4, c.alpha = 8;
  c.targets = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "q_proj", "k_proj", "v_proj", "out_proj"};
  auto m = xv::KdModel::load(std::string(XV_FIXTURES) + "/models/tiny_phi3v", "lora", c, 1);
  int k = 0;
  for (auto& t : m->trainable())
    if (t.name.find("lora_B") != std::string::npos)
      xv::test::fill_each(*t.value, [&](size_t) { return 0.02f * float((k++ % 11) - 5); });
  const fs::path d = fs::temp_directory_path() / ("xv_phi3v_export_" + std::to_string(::getpid()));
  fs::remove_all(d);
  m->save_adapter((d / "adapter").string());
  ASSERT_TRUE(fs::exists(d / "adapter" / "adapter_config.json"));
  auto m2 = xv::KdModel::load(std::string(XV_FIXTURES) + "/models/tiny_phi3v", "lora", c, 99);
  m2->load_adapter((d / "adapter").string());
  auto a = m->trainable(), b = m2->trainable();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].value->to_vector(), b[i].value->to_vector()) << a[i].name;
  }
  m->save_merged((d / "merged").string());
  const std::vector<std::string> texts = {"Find an image of a cat.", "Trova un'immagine di un gatto sul divano."};
  const xv::Tensor want = m->student_embed(texts, false);
  auto e = xv::Embedder::load((d / "merged").string());
  std::vector<xv::EmbedItem> items;
  for (const auto& t : texts) items.push_back({t, ""});
  const xv::Tensor got = e->embed(items, {});
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < got.numel(); ++i) ASSERT_NEAR(got.at(int64_t(i)), want.at(int64_t(i)), 1e-4f * (1.0f + std::fabs(want.at(int64_t(i)))));
  fs::remove_all(d);
}

}  // namespace
