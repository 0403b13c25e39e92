// trainable: full on the tiny BERT: every base weight trains (BertModel::layer_backward and embeddings_backward with BertGrads). A
// directional finite-difference check over all tensors (embeddings and LayerNorms included), the
// teacher-cache requirement, a few AdamW steps and the merged export, and checkpointing invariance.
#include <gtest/gtest.h>

#include "parallel/comm.h"
#include "parallel/fsdp.h"
#include "tests/tensor_values.h"
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "models/embedder.h"
#include "models/kd/kd_model.h"
#include "train/schedule.h"

namespace {

const std::string kModel = std::string(XV_FIXTURES) + "/models/tiny_bert";

std::vector<xv::TrainPair> pairs() {
  return {{"Cannot open the file.", "Impossibile aprire il file.", "it", ""},
          {"Permission denied", "Permiso denegado", "es", ""},
          {"Write error", "Erreur d'écriture", "fr", ""}};
}

std::unique_ptr<xv::KdModel> full_model() { return xv::KdModel::load(kModel, "full", xv::LoraConfig{}, 3); }

std::vector<std::vector<float>> grads(xv::KdModel& m) {
  std::vector<std::vector<float>> g;
  for (auto& t : m.trainable()) g.push_back(t.grad->to_vector());
  return g;
}

// The teacher targets of the unmodified model, and a student that differs from it (else the loss on the
// English side sits at its minimum): every weight nudged by a fixed pattern.
struct Student {
  std::unique_ptr<xv::KdModel> m = full_model();
  xv::Tensor teacher;
  Student() {
    teacher = m->teacher_embed(pairs());
    int k = 0;
    for (auto& t : m->trainable()) xv::test::add_each(*t.value, [&](size_t) { return 0.01f * float((k++ % 13) - 6); });
  }
};

TEST(TrainFull, TrainableNamesTheWholeModel) {
  auto m = full_model();
  auto t = m->trainable();
  ASSERT_EQ(t.size(), 5u + 2u * 12u);  // tiny_bert: 2 layers
  EXPECT_EQ(t[0].name, "embeddings.word_embeddings.weight");
  EXPECT_EQ(t[5].name, "encoder.layer.0.attention.self.qkv.weight");
  EXPECT_EQ(t[5].value->shape(), (xv::Shape{192, 64}));
  for (auto& x : t) EXPECT_EQ(x.value->shape(), x.grad->shape()) << x.name;
}

TEST(TrainFull, GradientMatchesDirectionalFiniteDifference) {
  Student s;
  auto& m = *s.m;
  xv::KdStepOptions o;
  o.teacher_en = &s.teacher;
  m.zero_grad();
  m.forward_backward(pairs(), o);
  auto g = grads(m);
  auto t = m.trainable();
  // Every tensor must get a gradient (embeddings and LayerNorms included).
  for (size_t i = 0; i < t.size(); ++i) {
    double n = 0;
    for (float x : g[i]) n += double(x) * x;
    EXPECT_GT(n, 0.0) << t[i].name;
  }
  double dot = 0;
  std::vector<std::vector<float>> v(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    v[i].resize(size_t(t[i].value->numel()));
    for (size_t j = 0; j < v[i].size(); ++j) {
      v[i][j] = float(int((i * 31 + j * 7) % 17) - 8) / 8.0f;
      dot += double(g[i][j]) * v[i][j];
    }
  }
  auto loss_at = [&](float h) {
    for (size_t i = 0; i < t.size(); ++i)
      xv::test::add_each(*t[i].value, [&](size_t j) { return h * v[i][j]; });
    m.zero_grad();
    const double l = m.forward_backward(pairs(), o).loss;
    for (size_t i = 0; i < t.size(); ++i)
      xv::test::add_each(*t[i].value, [&](size_t j) { return -h * v[i][j]; });
    return l;
  };
  const float h = 1e-3f;
  const double fd = (loss_at(h) - loss_at(-h)) / (2.0 * h);
  std::printf("full gradient: directional derivative %.6g, finite difference %.6g\n", dot, fd);
  EXPECT_NEAR(fd, dot, 2e-2 * std::fabs(dot) + 1e-6) << "finite difference " << fd << " vs gradient " << dot;
  // Per group too: the embeddings alone (word, position, token type, LayerNorm), a sharper check of the part
  // of the backward the LoRA path never runs.
  for (size_t i = 5; i < t.size(); ++i) std::fill(v[i].begin(), v[i].end(), 0.0f);
  double dot_e = 0;
  for (size_t i = 0; i < 5; ++i)
    for (size_t j = 0; j < v[i].size(); ++j) dot_e += double(g[i][j]) * v[i][j];
  const double fd_e = (loss_at(h) - loss_at(-h)) / (2.0 * h);
  std::printf("embeddings only: directional derivative %.6g, finite difference %.6g\n", dot_e, fd_e);
  EXPECT_NEAR(fd_e, dot_e, 2e-2 * std::fabs(dot_e) + 1e-6);
}

TEST(TrainFull, StepWithoutTeacherCacheFails) {
  auto m = full_model();
  try {
    m->forward_backward(pairs(), {});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("data.teacher_cache"), std::string::npos) << e.what();
  }
  EXPECT_THROW(m->save_adapter(::testing::TempDir() + "/xv_full_no_adapter"), std::exception);
  EXPECT_THROW(m->load_adapter(kModel), std::exception);
}

TEST(TrainFull, CheckpointingGivesIdenticalGradients) {
  Student s;
  xv::KdStepOptions o;
  o.teacher_en = &s.teacher;
  s.m->zero_grad();
  auto a = s.m->forward_backward(pairs(), o);
  auto ga = grads(*s.m);
  o.checkpointing = true;
  s.m->zero_grad();
  auto b = s.m->forward_backward(pairs(), o);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(ga, grads(*s.m));
}

TEST(TrainFull, AdamWLowersTheLossAndTheMergedModelEmbedsAsTheStudent) {
  namespace fs = std::filesystem;
  Student s;
  auto& m = *s.m;
  xv::KdStepOptions o;
  o.teacher_en = &s.teacher;
  // The trainer's optimizer on one process (parallel/fsdp.h): AdamW through the op set.
  xv::ops::AdamWParams ac;
  ac.lr = 1e-3f;
  auto comm = xv::par::make_self_communicator();
  xv::par::TrainableOptions to;
  to.world = comm.get();
  xv::par::TrainableShards opt(m.trainable(), ac, to);
  double first = 0, last = 0;
  for (int step = 0; step < 6; ++step) {
    m.zero_grad();
    const double l = m.forward_backward(pairs(), o).loss;
    if (step == 0) first = l;
    last = l;
    opt.step(ac.lr, 0.0);
  }
  std::printf("loss: first %.6g, after 5 AdamW steps %.6g\n", first, last);
  EXPECT_LT(last, first);

  const fs::path d = fs::temp_directory_path() / ("xv_full_export_" + std::to_string(::getpid()));
  fs::remove_all(d);
  m.save_merged(d.string());
  const std::vector<std::string> texts = {"Cannot open the file.", "Impossibile aprire il file sul disco."};
  const xv::Tensor want = m.student_embed(texts, false);
  auto e = xv::Embedder::load(d.string());
  std::vector<xv::EmbedItem> items;
  for (const auto& t : texts) items.push_back({t, ""});
  const xv::Tensor got = e->embed(items, {});
  ASSERT_EQ(got.shape(), want.shape());
  float worst = 0;
  for (int64_t i = 0; i < got.numel(); ++i) worst = std::max(worst, std::fabs(got.at(int64_t(i)) - want.at(int64_t(i))));
  std::printf("merged vs student: max |diff| %.3g\n", double(worst));
  EXPECT_LT(worst, 1e-4f);
  // And the merged model differs from the base: the trained weights were written.
  auto base = xv::Embedder::load(kModel);
  const xv::Tensor orig = base->embed(items, {});
  float moved = 0;
  for (int64_t i = 0; i < got.numel(); ++i) moved = std::max(moved, std::fabs(got.at(int64_t(i)) - orig.at(int64_t(i))));
  EXPECT_GT(moved, 1e-3f);
  fs::remove_all(d);
}

}  // namespace
