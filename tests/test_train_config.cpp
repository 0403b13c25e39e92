// The training config: defaults (the reference hyper-parameters), --set overrides, and bad configs, each a
// clear error: malformed YAML (file:line:column), an unknown key (with the nearest valid key), a wrong type
// (the key and the expected type), an invalid value, a missing required key.
#include <gtest/gtest.h>

#include "models/backbones.h"
#include "core/error.h"
#include "train/train_config.h"

namespace {

const std::string kSrc = XV_SOURCE_DIR;
const std::string kMin = "model: m\ndata:\n  train: p.jsonl\noutput_dir: out\n";

std::string error_of(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    xv::parse_train_config(yaml, "c.yaml", sets);
  } catch (const xv::Error& e) {
    return e.what();
  }
  return "";
}

void expect_has(const std::string& msg, std::initializer_list<const char*> parts) {
  ASSERT_FALSE(msg.empty()) << "no error was raised";
  for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
}

TEST(TrainConfig, DefaultsAreTheReferenceHyperParameters) {
  const xv::TrainConfig c = xv::parse_train_config(kMin, "c.yaml");
  EXPECT_EQ(c.model, "m");
  EXPECT_EQ(c.data.train, "p.jsonl");
  EXPECT_EQ(c.trainable, "lora");
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-5);
  EXPECT_EQ(c.train.schedule, "cosine");
  EXPECT_EQ(c.train.warmup_steps, 0);
  EXPECT_DOUBLE_EQ(c.train.weight_decay, 0.0);
  EXPECT_DOUBLE_EQ(c.train.max_grad_norm, 0.3);
  EXPECT_EQ(c.train.batch_size, 8);
  EXPECT_EQ(c.train.grad_accum, 4);
  EXPECT_EQ(c.train.epochs, 1);
  EXPECT_EQ(c.lora.r, 8);
  EXPECT_DOUBLE_EQ(c.lora.alpha, 64);
  EXPECT_DOUBLE_EQ(c.lora.dropout, 0.1);
  EXPECT_TRUE(c.lora.targets.empty());  // the backbone's default, resolved by the trainer
  EXPECT_EQ(xv::default_lora_targets("bert"), (std::vector<std::string>{"query", "key", "value", "dense"}));
  EXPECT_TRUE(c.export_.adapter);
  EXPECT_FALSE(c.export_.merged);
}

TEST(TrainConfig, TinyBertConfigLoads) {
  const xv::TrainConfig c = xv::load_train_config(kSrc + "/configs/tiny-bert.yaml", {"output_dir=/tmp/x"});
  EXPECT_EQ(c.model, "tests/fixtures/models/tiny_bert");
  EXPECT_EQ(c.output_dir, "/tmp/x");
  EXPECT_EQ(c.lora.r, 4);
}

// Every config the repository ships parses, and the Phi-3.5-vision one carries the released recipe.
TEST(TrainConfig, EveryShippedConfigParses) {
  for (const char* name : {"quickstart", "tiny-bert", "tiny-phi3v", "phi35v-lora"})
    EXPECT_NO_THROW(xv::load_train_config(kSrc + "/configs/" + name + ".yaml", {})) << name;
  const xv::TrainConfig c = xv::load_train_config(kSrc + "/configs/phi35v-lora.yaml", {});
  EXPECT_EQ(c.lora.r, 8);
  EXPECT_DOUBLE_EQ(c.lora.alpha, 64.0);
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-5);
  EXPECT_DOUBLE_EQ(c.train.max_grad_norm, 0.3);
  EXPECT_EQ(c.train.batch_size, 8);
  EXPECT_EQ(c.train.grad_accum, 4);
}

TEST(TrainConfig, SetOverridesUseDottedKeysAndYamlValues) {
  const xv::TrainConfig c = xv::parse_train_config(
      kMin, "c.yaml",
      {"train.lr=2e-4", "lora.targets=[query, value]", "train.betas=[0.8, 0.95]", "export.merged=true",
       "data.teacher_cache=t.npy", "seed = 7"});
  EXPECT_DOUBLE_EQ(c.train.lr, 2e-4);
  EXPECT_EQ(c.lora.targets, (std::vector<std::string>{"query", "value"}));
  EXPECT_EQ(c.train.betas, (std::vector<double>{0.8, 0.95}));
  EXPECT_TRUE(c.export_.merged);
  EXPECT_EQ(c.data.teacher_cache, "t.npy");
  EXPECT_EQ(c.seed, 7);
  // An empty value unsets an optional path.
  EXPECT_EQ(xv::parse_train_config(kMin, "c.yaml", {"data.teacher_cache=t.npy", "data.teacher_cache="}).data.teacher_cache,
            "");
}

TEST(TrainConfig, ResolvedYamlReadsBackUnchanged) {
  xv::TrainConfig c = xv::parse_train_config(kMin + "train:\n  lr: 3.3e-5\n  betas: [0.9, 0.98]\n", "c.yaml");
  c.lora.targets = {"query", "dense"};
  c.data.train = "with \"quotes\" and ünïcode: x.jsonl";
  const std::string y = xv::train_config_yaml(c);
  const xv::TrainConfig back = xv::parse_train_config(y, "resolved.yaml");
  EXPECT_EQ(xv::train_config_yaml(back), y);
  for (const auto& k : xv::train_config_keys())
    EXPECT_EQ(xv::train_config_value(back, k), xv::train_config_value(c, k)) << k;
}

// Found by tests/fuzz/fuzz_train_config.cpp: yaml-cpp passes invalid UTF-8 through, and the resolved config of
// such a value could not be written (train_config_yaml threw a JSON exception, not an xv::Error).
TEST(TrainConfig, InvalidUtf8IsRefused) {
  expect_has(error_of(kMin, {"data.train=t.js\x8a" "onl"}), {"--set data.train=", "data.train must be UTF-8 text"});
  expect_has(error_of(kMin + "lora:\n  targets: [query, \"v\xff\"]\n"), {"c.yaml", "lora.targets must be UTF-8 text"});
  expect_has(error_of("model: m\xc3\ndata:\n  train: p.jsonl\noutput_dir: out\n"), {"c.yaml", "model must be UTF-8 text"});
}

TEST(TrainConfig, MalformedYaml) {
  expect_has(error_of("model: m\ntrain: [1, 2\n"), {"c.yaml:", "not valid YAML"});
  expect_has(error_of("model: m\n  bad indent: 1\n x"), {"c.yaml:", "not valid YAML"});
  expect_has(error_of("- a\n- b\n"), {"c.yaml", "must be a mapping"});
}

TEST(TrainConfig, UnknownKeySuggestsTheNearest) {
  expect_has(error_of(kMin + "train:\n  lrr: 1e-4\n"), {"c.yaml:6", "unknown key 'train.lrr'", "did you mean 'train.lr'"});
  expect_has(error_of(kMin + "lora:\n  alpah: 16\n"), {"did you mean 'lora.alpha'"});
  expect_has(error_of(kMin + "trian:\n  lr: 1e-4\n"), {"unknown key 'trian'", "did you mean 'train'"});
  expect_has(error_of(kMin + "learning_rate: 1e-4\n"), {"did you mean 'train.lr'"});
  expect_has(error_of(kMin + "epochs: 2\n"), {"did you mean 'train.epochs'"});
  expect_has(error_of(kMin + "train:\n  batchsize: 4\n"), {"did you mean 'train.batch_size'"});
  expect_has(error_of(kMin + "train:\n  warmup: 4\n"), {"did you mean 'train.warmup_steps'"});
  expect_has(error_of(kMin + "zzzzzzzz: 1\n"), {"unknown key 'zzzzzzzz'", "valid keys at the top level"});
  expect_has(error_of(kMin, {"train.lrr=1"}), {"--set train.lrr=1", "did you mean 'train.lr'"});
}

TEST(TrainConfig, WrongTypeNamesKeyAndType) {
  expect_has(error_of(kMin + "train:\n  batch_size: eight\n"),
             {"c.yaml:6", "train.batch_size must be an integer", "'eight'"});
  expect_has(error_of(kMin + "train:\n  batch_size: 1.5\n"), {"train.batch_size must be an integer"});
  expect_has(error_of(kMin + "train:\n  lr: [1]\n"), {"train.lr must be a number", "a list"});
  expect_has(error_of(kMin + "lora:\n  targets: query\n"), {"lora.targets must be a list of strings"});
  expect_has(error_of(kMin + "export:\n  merged: maybe\n"), {"export.merged must be a boolean"});
  expect_has(error_of(kMin + "train: 5\n"), {"'train' is a section and must be a mapping"});
  expect_has(error_of(kMin + "train:\n  lr: .nan\n"), {"train.lr must be a finite number"});
  expect_has(error_of(kMin + "seed:\n"), {"seed must be an integer", "null"});
  expect_has(error_of(kMin, {"train.grad_accum=two"}), {"--set train.grad_accum=two", "must be an integer"});
  expect_has(error_of(kMin, {"lora=8"}), {"'lora' is a section", "--set lora."});
  expect_has(error_of(kMin, {"train.lr"}), {"expected key=value"});
}

TEST(TrainConfig, InvalidValuesAndMissingKeys) {
  expect_has(error_of(kMin + "train:\n  schedule: cos\n"), {"c.yaml:6", "train.schedule must be cosine, linear or constant"});
  expect_has(error_of(kMin + "lora:\n  dropout: 1.0\n"), {"lora.dropout must be in [0, 1)"});
  expect_has(error_of(kMin + "train:\n  betas: [0.9]\n"), {"train.betas must be two numbers"});
  expect_has(error_of(kMin + "trainable: half\n"), {"trainable must be lora or full"});
  expect_has(error_of(kMin + "checkpoint:\n  keep: 0\n"), {"checkpoint.keep must be >= 1"});
  expect_has(error_of(kMin + "parallel:\n  vision_layers_per_unit: 0\n"), {"parallel.vision_layers_per_unit must be in [1, 1024]"});
  expect_has(error_of(kMin + "parallel:\n  ranks_per_node: -1\n"), {"parallel.ranks_per_node must be >= 0"});
  expect_has(error_of("data:\n  train: p.jsonl\noutput_dir: o\n"), {"missing required key 'model'"});
  expect_has(error_of("model: m\noutput_dir: o\n"), {"missing required key 'data.train'"});
  expect_has(error_of(""), {"missing required key 'model'"});
  expect_has(error_of(kMin + "seed: 1\nseed: 2\n"), {"given twice"});
}

TEST(TrainConfig, EditDistance) {
  EXPECT_EQ(xv::edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(xv::edit_distance("", "abc"), 3u);
  EXPECT_EQ(xv::edit_distance("lr", "lr"), 0u);
}

}  // namespace
