// trainable: full on the tiny Phi-3-vision: every weight of the embedding path trains (decoder, projector,
// separators, the CLIP layers that run and their embeddings). A directional finite-difference check over all
// tensors (and over the image side alone), the teacher-cache requirement and the refused image-prefix loss,
// checkpointing invariance, a few AdamW steps and the merged export.
#include <gtest/gtest.h>

#include "parallel/comm.h"
#include "parallel/fsdp.h"
#include "tests/tensor_values.h"
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "models/embedder.h"
#include "models/kd/kd_model.h"
#include "train/schedule.h"
#include "core/safetensors.h"

namespace {

const std::string kModel = std::string(XV_FIXTURES) + "/models/tiny_phi3v";
const std::string kImage = std::string(XV_FIXTURES) + "/images/tiny_50x30.png";
const std::string kClip = "model.vision_embed_tokens.img_processor.vision_model.";

std::vector<xv::TrainPair> pairs() {
  return {{"A small picture.", "Una piccola immagine.", "it", kImage},
          {"Cannot open the file.", "Impossibile aprire il file.", "it", ""}};
}

std::unique_ptr<xv::KdModel> full_model() { return xv::KdModel::load(kModel, "full", xv::LoraConfig{}, 3); }

std::vector<std::vector<float>> grads(xv::KdModel& m) {
  std::vector<std::vector<float>> g;
  for (auto& t : m.trainable()) g.push_back(t.grad->to_vector());
  return g;
}

// The teacher targets of the unmodified model, and a student that differs from it: every weight nudged by a
// fixed pattern.
struct Student {
  std::unique_ptr<xv::KdModel> m = full_model();
  xv::Tensor teacher;
  Student() {
    teacher = m->teacher_embed(pairs());
    int k = 0;
    for (auto& t : m->trainable()) xv::test::add_each(*t.value, [&](size_t) { return 0.01f * float((k++ % 13) - 6); });
  }
};

TEST(TrainFullPhi3V, TrainableNamesTheWholeEmbeddingPath) {
  auto m = full_model();
  auto t = m->trainable();
  // tiny_phi3v: 2 decoder layers (6 tensors each) + embed_tokens + norm; glb_GN, sub_GN, 2 x 2 projector
  // tensors; 5 CLIP embedding tensors + 2 CLIP layers that run (of 3) x 12.
  ASSERT_EQ(t.size(), 2u + 2u * 6u + 6u + 5u + 2u * 12u);
  EXPECT_EQ(t[0].name, "model.embed_tokens.weight");
  EXPECT_EQ(t[2].name, "model.layers.0.self_attn.qkv_proj.weight");
  bool fused = false;
  for (auto& x : t) {
    EXPECT_EQ(x.value->shape(), x.grad->shape()) << x.name;
    EXPECT_EQ(x.name.find("encoder.layers.2."), std::string::npos) << x.name;  // the last layer feeds nothing
    if (x.name == kClip + "encoder.layers.1.self_attn.qkv_proj.weight") {
      fused = true;
      EXPECT_EQ(x.value->shape(), (xv::Shape{96, 32}));
    }
  }
  EXPECT_TRUE(fused);
}

TEST(TrainFullPhi3V, GradientMatchesDirectionalFiniteDifference) {
  Student s;
  auto& m = *s.m;
  xv::KdStepOptions o;
  o.teacher_en = &s.teacher;
  m.zero_grad();
  m.forward_backward(pairs(), o);
  auto g = grads(m);
  auto t = m.trainable();
  // Every tensor gets a gradient.
  for (size_t i = 0; i < t.size(); ++i) {
    double n = 0;
    for (float x : g[i]) n += double(x) * x;
    EXPECT_GT(n, 0.0) << t[i].name;
  }
  std::vector<std::vector<float>> v(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    v[i].resize(size_t(t[i].value->numel()));
    for (size_t j = 0; j < v[i].size(); ++j) v[i][j] = float(int((i * 31 + j * 7) % 17) - 8) / 8.0f;
  }
  auto dot_with = [&]() {
    double d = 0;
    for (size_t i = 0; i < t.size(); ++i)
      for (size_t j = 0; j < v[i].size(); ++j) d += double(g[i][j]) * v[i][j];
    return d;
  };
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
  const double dot = dot_with();
  const double fd = (loss_at(h) - loss_at(-h)) / (2.0 * h);
  std::printf("full gradient: directional derivative %.6g, finite difference %.6g\n", dot, fd);
  EXPECT_NEAR(fd, dot, 2e-2 * std::fabs(dot) + 1e-6);
  // The image side alone (separators, projector, tower and its embeddings): the part of the backward the
  // LoRA path never runs for weights.
  size_t first_vis = 0;
  while (first_vis < t.size() && t[first_vis].name.find("vision_embed_tokens") == std::string::npos) ++first_vis;
  ASSERT_LT(first_vis, t.size());
  for (size_t i = 0; i < first_vis; ++i) std::fill(v[i].begin(), v[i].end(), 0.0f);
  const double dot_v = dot_with();
  const double fd_v = (loss_at(h) - loss_at(-h)) / (2.0 * h);
  std::printf("image side only: directional derivative %.6g, finite difference %.6g\n", dot_v, fd_v);
  EXPECT_NEAR(fd_v, dot_v, 2e-2 * std::fabs(dot_v) + 1e-6);
}

TEST(TrainFullPhi3V, StepWithoutTeacherCacheFails) {
  auto m = full_model();
  try {
    m->forward_backward(pairs(), {});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("data.teacher_cache"), std::string::npos) << e.what();
  }
  const xv::Tensor teacher = m->teacher_embed(pairs());
  xv::KdStepOptions o;
  o.teacher_en = &teacher;
  o.image_prefix_loss = true;
  try {
    m->forward_backward(pairs(), o);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("image_prefix_loss"), std::string::npos) << e.what();
  }
  EXPECT_THROW(m->save_adapter(::testing::TempDir() + "/xv_full_phi3v_no_adapter"), std::exception);
  EXPECT_THROW(m->load_adapter(kModel), std::exception);
}

TEST(TrainFullPhi3V, CheckpointingGivesIdenticalGradients) {
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

TEST(TrainFullPhi3V, AdamWLowersTheLossAndTheMergedModelEmbedsAsTheStudent) {
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
  for (int step = 0; step < 5; ++step) {
    m.zero_grad();
    const double l = m.forward_backward(pairs(), o).loss;
    if (step == 0) first = l;
    last = l;
    opt.step(ac.lr, 0.0);
  }
  std::printf("loss: first %.6g, after 4 AdamW steps %.6g\n", first, last);
  EXPECT_LT(last, first);

  const fs::path d = fs::temp_directory_path() / ("xv_full_phi3v_export_" + std::to_string(::getpid()));
  fs::remove_all(d);
  m.save_merged(d.string());
  // The same tensors under the same names, shapes and dtypes as the base checkpoint (q/k/v split back).
  {
    const auto base = xv::WeightStore::open_dir(kModel);
    const auto out = xv::WeightStore::open_dir(d.string());
    EXPECT_EQ(base.names(), out.names());
    for (const auto& n : base.names()) {
      EXPECT_EQ(base.info(n).shape, out.info(n).shape) << n;
      EXPECT_EQ(base.info(n).dtype, out.info(n).dtype) << n;
    }
    // The tower's last layer is copied unchanged; a trained tensor is not.
    const std::string unused = kClip + "encoder.layers.2.mlp.fc1.weight";
    const std::string trained = kClip + "encoder.layers.0.self_attn.k_proj.weight";
    EXPECT_TRUE(std::equal(base.info(unused).data, base.info(unused).data + base.info(unused).nbytes,
                           out.info(unused).data));
    EXPECT_FALSE(std::equal(base.info(trained).data, base.info(trained).data + base.info(trained).nbytes,
                            out.info(trained).data));
  }
  EXPECT_TRUE(fs::is_regular_file(d / "preprocessor_config.json"));
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
