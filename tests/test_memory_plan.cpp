// The training memory plan (train/memory_plan.h): the backbones' activation estimates against the bytes a KD step
// really allocates (core/storage.h counts every tensor), for both backbones, with and without checkpointing,
// images and a teacher cache; and the check's decision and advice.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/storage.h"
#include "models/kd/kd_model.h"
#include "train/memory_plan.h"

namespace {

const std::string kFix = XV_FIXTURES;

std::unique_ptr<xv::KdModel> load(const std::string& model, std::vector<std::string> targets) {
  xv::LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.dropout = 0.1f;
  c.targets = std::move(targets);
  return xv::KdModel::load(kFix + "/models/" + model, "lora", c, 5);
}

std::string words(int n, const char* w) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i ? " " : "") + std::string(w) + std::to_string(i % 7);
  return s;
}

struct Measured {
  uint64_t step = 0, estimate = 0;
  xv::ActivationShape shape;
};

// One forward_backward: the most bytes it held at once on top of what was live before it, and the estimate for
// the shape measured on the prepared pairs (tokens: the longest side; crops: all of the micro-batch's).
Measured measure(xv::KdModel& m, const std::vector<xv::TrainPair>& pairs, xv::KdStepOptions o, bool teacher_cache) {
  Measured r;
  r.shape.batch = int64_t(pairs.size());
  r.shape.checkpointing = o.checkpointing;
  r.shape.image_prefix_loss = o.image_prefix_loss;
  r.shape.teacher_cache = teacher_cache;
  std::vector<xv::TrainPair> batch = pairs;
  for (auto& p : batch) {
    p.prepared = m.prepare(p);
    const xv::PreparedSize z = m.prepared_size(*p.prepared);
    r.shape.tokens = std::max(r.shape.tokens, z.tokens);
    r.shape.crops += z.crops;
  }
  xv::Tensor teacher;
  if (teacher_cache) {
    teacher = m.teacher_embed(batch);
    o.teacher_en = &teacher;
  }
  m.zero_grad();
  m.forward_backward(batch, o);  // the first step allocates the gradients it accumulates into
  const size_t before = xv::storage_live_bytes(xv::DeviceKind::cpu);
  xv::reset_storage_peak(xv::DeviceKind::cpu);
  m.forward_backward(batch, o);
  r.step = xv::storage_peak_bytes(xv::DeviceKind::cpu) - before;
  EXPECT_EQ(xv::storage_live_bytes(xv::DeviceKind::cpu), before) << "a step keeps nothing once it returns";
  r.estimate = m.activation_bytes(r.shape);
  return r;
}

void expect_bounds(const Measured& r, const std::string& what) {
  SCOPED_TRACE(what);
  std::printf("%-44s tokens %3lld crops %2lld  step %9llu B  estimate %9llu B  (x%.2f)\n", what.c_str(),
              (long long)r.shape.tokens, (long long)r.shape.crops, (unsigned long long)r.step,
              (unsigned long long)r.estimate, double(r.estimate) / double(std::max<uint64_t>(r.step, 1)));
  EXPECT_GT(r.step, 0u);
  EXPECT_GE(r.estimate, r.step) << "the estimate must not be below what a step allocates";
  EXPECT_LE(r.estimate, r.step * 5 / 2) << "the estimate is far above what a step allocates";
}

TEST(MemoryPlan, BertActivationEstimateBoundsTheStep) {
  auto m = load("tiny_bert", {"query", "key", "value", "dense"});
  const std::vector<xv::TrainPair> pairs = {{words(20, "network"), words(22, "rete"), "it", ""},
                                            {words(12, "file"), words(9, "archivo"), "es", ""},
                                            {words(14, "open"), words(16, "ouvrir"), "fr", ""}};
  for (const bool ckpt : {true, false})
    for (const bool cache : {false, true}) {
      xv::KdStepOptions o;
      o.checkpointing = ckpt;
      o.dropout_seed = 7;
      expect_bounds(measure(*m, pairs, o, cache),
                    std::string("bert") + (ckpt ? ", checkpointing" : "") + (cache ? ", teacher cache" : ""));
    }
}

TEST(MemoryPlan, Phi3vActivationEstimateBoundsTheStep) {
  const std::vector<xv::TrainPair> text = {{words(30, "network"), words(34, "rete"), "it", ""},
                                           {words(8, "file"), words(6, "archivo"), "es", ""}};
  const std::vector<xv::TrainPair> images = {
      {"<|image_1|> Represent the given image.", "<|image_1|> Rappresenta l'immagine data.", "it",
       kFix + "/images/tiny_50x30.png"},
      {"<|image_1|> " + words(20, "what"), "<|image_1|> " + words(22, "que"), "es", kFix + "/images/wide_800x96.png"},
      {"A pair without an image", "Una coppia senza immagine", "it", ""}};
  const std::vector<std::string> decoder = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"};
  const std::vector<std::string> all = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "q_proj",
                                        "k_proj",   "v_proj", "out_proj",     "fc1",       "fc2"};
  for (const bool tower : {false, true}) {
    auto m = load("tiny_phi3v", tower ? all : decoder);
    for (const bool ckpt : {true, false})
      for (const bool with_images : {false, true})
        for (const bool prefix : {false, true}) {
          if (prefix && !with_images) continue;
          xv::KdStepOptions o;
          o.checkpointing = ckpt;
          o.dropout_seed = 3;
          o.image_prefix_loss = prefix;
          o.vision_units = with_images;
          const std::string what = std::string("phi3_v") + (tower ? ", tower adapted" : "") +
                                   (ckpt ? ", checkpointing" : "") + (with_images ? ", images" : "") +
                                   (prefix ? ", prefix loss" : "");
          expect_bounds(measure(*m, with_images ? images : text, o, false), what);
          if (!prefix) expect_bounds(measure(*m, with_images ? images : text, o, true), what + ", teacher cache");
        }
  }
}

xv::MemoryPlan plan() {
  xv::MemoryPlan p;
  p.held = 800u << 20;
  p.frozen = 700u << 20;
  p.trainable = 20u << 20;
  p.gathered = 30u << 20;
  p.activations = 400u << 20;
  p.step = 10u << 20;
  p.shape.batch = 8;
  p.shape.tokens = 128;
  return p;
}

TEST(MemoryPlan, FormatNamesEveryPart) {
  const std::string s = xv::format_memory_plan(plan());
  for (const char* want : {"held 800 MB", "frozen base 700 MB", "trainable state 20 MB", "other 80 MB",
                           "adds about 440 MB", "activations 400 MB for 8 pairs x 128 tokens, checkpointing",
                           "gathered units 30 MB", "optimizer 10 MB", "total about 1.2 GB"})
    EXPECT_NE(s.find(want), std::string::npos) << want << " in: " << s;
}

TEST(MemoryPlan, CheckRefusesWhatDoesNotFitAndSaysWhatWould) {
  const xv::MemoryPlan p = plan();
  xv::MemoryPlanSettings st;
  st.batch_size = 8;
  st.checkpointing = false;
  // Fits: 440 MB (+5%) within 500 MB; an unknown budget never refuses.
  EXPECT_NO_THROW(xv::check_memory_plan(p, {500u << 20, "MemAvailable"}, st));
  EXPECT_NO_THROW(xv::check_memory_plan(p, {1u << 20, ""}, st));
  // 300 MB: room for 300*20/21 - 40 = 245 MB of activations, 50 MB a pair: batch 4.
  try {
    xv::check_memory_plan(p, {300u << 20, "ulimit -v"}, st);
    FAIL() << "expected a refusal";
  } catch (const xv::Error& e) {
    const std::string m = e.what();
    for (const char* want : {"needs about 440 MB more", "300 MB is available (limited by ulimit -v)",
                             "largest part is the activations", "train.batch_size: 4", "train.checkpointing: true",
                             "model.weight_dtype: bf16", "memory plan (cpu, per rank)"})
      EXPECT_NE(m.find(want), std::string::npos) << want << " in: " << m;
  }
  // Not even one pair fits: no batch size is offered.
  st.checkpointing = true;
  try {
    xv::check_memory_plan(p, {30u << 20, "MemAvailable"}, st);
    FAIL() << "expected a refusal";
  } catch (const xv::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find("train.batch_size"), std::string::npos) << m;
    EXPECT_EQ(m.find("train.checkpointing"), std::string::npos) << m;
    EXPECT_NE(m.find("a machine with more memory"), std::string::npos) << m;
  }
}

}  // namespace
