// The training loop on the tiny BERT (configs/tiny-bert.yaml: LoRA with dropout, 2 pairs x 2 micro-batches,
// cosine with warmup, clipping): resuming is bit-identical (10 steps straight == 5 + resume + 5, and a run
// killed between checkpoints), checkpoint retention, the teacher cache (same losses as the live teacher;
// refused when made by another model or from other pairs), bad pairs files and a diverging run (the error
// names the step and the term; the last checkpoint stays loadable).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/backbones.h"
#include "train/checkpoint.h"
#include "core/error.h"
#include "core/file_util.h"
#include "models/kd/kd_model.h"
#include "train/teacher_cache.h"
#include "train/train_config.h"
#include "data/train_data.h"
#include "train/trainer.h"
#include "kernels/ops.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const std::string kSrc = XV_SOURCE_DIR;
const std::string kFix = XV_FIXTURES;

std::string tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("xv_trainer_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

xv::TrainConfig tiny_config(const std::string& out) {
  xv::TrainConfig c = xv::load_train_config(kSrc + "/configs/tiny-bert.yaml");
  c.model = kFix + "/models/tiny_bert";
  c.data.train = kFix + "/train/pairs_tiny.jsonl";
  c.output_dir = out;
  c.train.max_steps = 10;  // 2.5 epochs of the 16 pairs
  c.checkpoint.every_steps = 5;
  c.checkpoint.keep = 2;
  c.export_.merged = false;
  return c;
}

xv::TrainOptions quiet(bool resume = false, int64_t stop_after = 0) {
  xv::TrainOptions o;
  o.quiet = true;
  o.resume = resume;
  o.stop_after = stop_after;
  return o;
}

// metrics.jsonl without the timing and memory fields.
std::vector<std::string> metrics_lines(const std::string& out) {
  std::ifstream f(out + "/metrics.jsonl");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(f, line)) {
    json j = json::parse(line);
    for (const char* k : {"pairs_per_s", "elapsed_s", "peak_rss_mb"}) {
      EXPECT_TRUE(j.contains(k)) << k;
      j.erase(k);
    }
    lines.push_back(j.dump());
  }
  return lines;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const xv::Error& e) {
    return e.what();
  }
  return "";
}

void expect_has(const std::string& msg, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(msg.empty()) << "no error was raised";
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
}

class Trainer : public ::testing::Test {
 protected:
  void SetUp() override { xv::ops::set_num_threads(1); }
};

TEST_F(Trainer, ResumeIsBitIdentical) {
  const std::string root = tmp_dir("resume");
  const std::string a = root + "/straight", b = root + "/five_five", c = root + "/seven_kill";
  auto sa = xv::train(tiny_config(a), quiet());
  EXPECT_TRUE(sa.finished);
  EXPECT_EQ(sa.steps, 10);
  // 5 steps, "killed" right after the step-5 checkpoint, then --resume.
  auto sb = xv::train(tiny_config(b), quiet(false, 5));
  EXPECT_FALSE(sb.finished);
  EXPECT_EQ(sb.steps, 5);
  EXPECT_FALSE(fs::exists(b + "/adapter"));
  auto sb2 = xv::train(tiny_config(b), quiet(true));
  EXPECT_EQ(sb2.start_step, 5);
  EXPECT_TRUE(sb2.finished);
  // Killed at step 7, between checkpoints: the resume starts again from step 5 and redoes 6 and 7.
  xv::train(tiny_config(c), quiet(false, 7));
  EXPECT_EQ(metrics_lines(c).size(), 7u);
  auto sc2 = xv::train(tiny_config(c), quiet(true));
  EXPECT_EQ(sc2.start_step, 5);

  const auto ma = metrics_lines(a);
  ASSERT_EQ(ma.size(), 10u);
  for (const std::string& other : {b, c}) {
    for (const char* f : {"checkpoints/step-10/trainable.safetensors", "checkpoints/step-10/optimizer-00000-of-00001.safetensors",
                          "checkpoints/step-10/state.json", "adapter/adapter_model.safetensors"})
      EXPECT_EQ(xv::read_file(a + "/" + f), xv::read_file(other + "/" + f)) << other << ": " << f << " differs";
    EXPECT_EQ(ma, metrics_lines(other)) << other;
  }
  // Dropout was on, and the data crossed two epoch boundaries.
  EXPECT_GT(tiny_config(a).lora.dropout, 0.0);
  EXPECT_DOUBLE_EQ(json::parse(ma.back())["epoch"].get<double>(), 2.5);
  std::printf("10 steps straight vs 5 + resume + 5 vs 7 (killed) + resume from 5: final adapters, moments, state and "
              "%zu metrics lines identical\n", ma.size());
  fs::remove_all(root);
}

TEST_F(Trainer, CheckpointsKeepTheNewestAndRefuseAFreshRunOverThem) {
  const std::string out = tmp_dir("keep");
  xv::TrainConfig cfg = tiny_config(out);
  cfg.checkpoint.every_steps = 2;
  cfg.checkpoint.keep = 2;
  xv::train(cfg, quiet());
  const auto all = xv::list_checkpoints(out);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(fs::path(all[0]).filename(), "step-8");
  EXPECT_EQ(fs::path(all[1]).filename(), "step-10");
  for (const char* f : {"trainable.safetensors", "optimizer-00000-of-00001.safetensors", "manifest.json", "state.json", "config.yaml"})
    EXPECT_TRUE(fs::exists(all[1] + "/" + f)) << f;
  // Nothing half-written is left beside them.
  for (const auto& e : fs::directory_iterator(out + "/checkpoints"))
    EXPECT_EQ(e.path().filename().string().rfind("step-", 0), 0u) << e.path();
  const auto st = xv::read_checkpoint_state(all[1]);
  EXPECT_EQ(st.step, 10);
  EXPECT_EQ(st.epoch, 2);
  EXPECT_EQ(st.index, 8);
  expect_has(error_of([&] { xv::train(cfg, quiet()); }), {"already holds checkpoints", "step-10", "--resume"});
  cfg.train.lr *= 2;
  expect_has(error_of([&] { xv::train(cfg, quiet(true)); }), {"--resume: train.lr is", "must keep it"});
  fs::remove_all(out);
}

TEST_F(Trainer, NonFiniteLossStopsNamingStepAndTerm) {
  const std::string out = tmp_dir("nan");
  xv::TrainConfig cfg = tiny_config(out);
  cfg.train.lr = 1e30;  // the first update throws the adapters to ~1e30: the next forward overflows
  cfg.train.warmup_steps = 0;
  cfg.checkpoint.every_steps = 1;
  const std::string msg = error_of([&] { xv::train(cfg, quiet()); });
  expect_has(msg, {"step 2: loss term '", "training stopped", "checkpoints/step-1, is intact"});
  std::printf("diverging run: %s\n", msg.c_str());
  // The checkpoint before the failure is complete and loads.
  ASSERT_EQ(xv::latest_checkpoint(out), out + "/checkpoints/step-1");
  xv::LoraConfig lc = cfg.lora_config();
  auto model = xv::KdModel::load(cfg.model, "lora", lc, 0);
  xv::load_checkpoint(out + "/checkpoints/step-1", model->trainable());
  for (const auto& t : model->trainable())
    for (float v : t.value->to_vector()) ASSERT_TRUE(std::isfinite(v)) << t.name;
  EXPECT_EQ(xv::read_checkpoint_state(out + "/checkpoints/step-1").step, 1);
  fs::remove_all(out);
}

TEST_F(Trainer, TeacherCacheGivesTheSameLossesAndIsCheckedAgainstModelAndPairs) {
  const std::string root = tmp_dir("cache");
  const std::string model = kFix + "/models/tiny_bert";
  const xv::TrainData data = xv::read_train_data(kFix + "/train/pairs_tiny.jsonl");
  {
    xv::LoraConfig lc;
    lc.targets = xv::default_lora_targets("bert");
    auto m = xv::KdModel::load(model, "lora", lc, 0);
    xv::write_teacher_cache(root + "/teacher.npy", xv::compute_teacher_embeddings(*m, data, 5), model, data);
  }
  EXPECT_TRUE(fs::exists(root + "/teacher.npy.json"));
  xv::TrainConfig live = tiny_config(root + "/live"), cached = tiny_config(root + "/cached");
  cached.data.teacher_cache = root + "/teacher.npy";
  xv::train(live, quiet());
  xv::train(cached, quiet());
  const auto ml = metrics_lines(root + "/live"), mc = metrics_lines(root + "/cached");
  ASSERT_EQ(ml.size(), mc.size());
  double worst = 0;
  for (size_t i = 0; i < ml.size(); ++i)
    for (const char* k : {"loss", "loss_en", "loss_xx", "grad_norm"}) {
      const double x = json::parse(ml[i])[k].get<double>(), y = json::parse(mc[i])[k].get<double>();
      if (x == 0) {
        EXPECT_LE(std::fabs(y), 1e-9) << k;  // student == teacher before the first update: 0 up to rounding
      } else {
        worst = std::max(worst, std::fabs(x - y) / std::fabs(x));
      }
    }
  EXPECT_LE(worst, 1e-4);
  std::printf("teacher cache vs live teacher: worst relative difference of the logged terms %.2e\n", worst);

  // Another model: a copy of the folder whose config.json differs by one byte.
  const std::string other = root + "/other_model";
  fs::copy(model, other, fs::copy_options::recursive);
  xv::write_file_atomic(other + "/config.json", xv::read_file(model + "/config.json") + " ");
  expect_has(error_of([&] { xv::load_teacher_cache(root + "/teacher.npy", other, data, 64); }),
             {"teacher.npy: the teacher cache was made by another model", "cache-teacher"});
  // Other pairs.
  std::string text = xv::read_file(kFix + "/train/pairs_tiny.jsonl");
  text.replace(text.find("Permission denied"), 17, "Permission refused");
  xv::write_file_atomic(root + "/other.jsonl", text);
  const xv::TrainData other_data = xv::read_train_data(root + "/other.jsonl");
  expect_has(error_of([&] { xv::load_teacher_cache(root + "/teacher.npy", model, other_data, 64); }),
             {"made from other pairs"});
  // No sidecar.
  fs::remove(root + "/teacher.npy.json");
  expect_has(error_of([&] { xv::load_teacher_cache(root + "/teacher.npy", model, data, 64); }), {"no sidecar"});
  fs::remove_all(root);
}

TEST_F(Trainer, BadPairsFiles) {
  const std::string dir = tmp_dir("pairs");
  auto write = [&](const std::string& name, const std::string& text) {
    xv::write_file_atomic(dir + "/" + name, text);
    return dir + "/" + name;
  };
  const std::string ok = R"({"text_en": "a b", "text_xx": "c d", "lang": "it"})";
  auto err = [&](const std::string& text) {
    const std::string p = write("p.jsonl", text);
    return error_of([&] { xv::read_train_data(p); });
  };
  expect_has(err(ok + "\n{oops\n"), {"p.jsonl:2: not valid JSON"});
  expect_has(err(ok + "\n[1, 2]\n"), {"p.jsonl:2: each line must be a JSON object"});
  expect_has(err(ok + "\n\n{\"text_xx\": \"x\"}\n"), {"p.jsonl:3: missing field 'text_en'"});
  expect_has(err(ok + "\n{\"text_en\": \"x\", \"text_xx\": \"  \"}\n"), {"p.jsonl:2: field 'text_xx' is empty"});
  expect_has(err(ok + "\n{\"text_en\": 5, \"text_xx\": \"y\"}\n"), {"p.jsonl:2: field 'text_en' must be a string"});
  expect_has(err(ok + "\n{\"text_en\": \"x\", \"text_xx\": \"y\", \"lang\": 3}\n"), {"p.jsonl:2: field 'lang' must be a string"});
  expect_has(err(ok + "\n{\"text_en\": \"x\", \"text_xx\": \"y\", \"image\": \"nope.png\"}\n"),
             {"p.jsonl:2: field 'image'", "nope.png does not exist"});
  expect_has(err("\n\n"), {"no training pairs"});
  expect_has(error_of([&] { xv::read_train_data(dir + "/missing.jsonl"); }), {"missing.jsonl", "does not exist"});
  // An image that does not decode, given to the text-only bert backbone: refused before any step, with its line.
  write("broken.png", "not a png");
  xv::TrainConfig cfg = tiny_config(dir + "/out");
  cfg.data.train = write("img.jsonl", ok + "\n" + ok + "\n{\"text_en\": \"x\", \"text_xx\": \"y\", \"image\": \"broken.png\"}\n");
  expect_has(error_of([&] { xv::train(cfg, quiet()); }), {"img.jsonl:3: field 'image' is set", "text only"});
  // Too few pairs for one step.
  cfg.data.train = write("one.jsonl", ok + "\n");
  cfg.train.max_steps = 0;
  cfg.train.epochs = 1;
  expect_has(error_of([&] { xv::train(cfg, quiet()); }), {"less than one optimizer step"});
  // A missing model folder.
  cfg.model = dir + "/no_model";
  expect_has(error_of([&] { xv::train(cfg, quiet()); }), {"no_model: model folder does not exist"});
  fs::remove_all(dir);
}

TEST(TrainData, PermutationsAndSeedsAreFixedFunctions) {
  const auto p0 = xv::epoch_permutation(16, 42, 0), p1 = xv::epoch_permutation(16, 42, 1);
  EXPECT_EQ(p0, xv::epoch_permutation(16, 42, 0));
  EXPECT_NE(p0, p1);
  auto s = p0;
  std::sort(s.begin(), s.end());
  for (int64_t i = 0; i < 16; ++i) EXPECT_EQ(s[size_t(i)], i);
  EXPECT_NE(xv::micro_batch_seed(42, 3, 0), xv::micro_batch_seed(42, 3, 1));
  EXPECT_NE(xv::micro_batch_seed(42, 3, 0), 0u);
}

}  // namespace
