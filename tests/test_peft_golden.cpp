// LoRA adapters in PEFT's formats, against PyTorch + PEFT (tools/make_peft_fixtures.py) on the tiny BERT:
//   load_adapter of the folder PEFT's save_pretrained wrote gives PeftModel's embeddings (1e-5 absolute);
//   save_adapter then load_adapter round-trips bit-exactly, with PEFT's keys in adapter_config.json;
//   save_merged then Embedder::load gives the embeddings of PEFT's merge_and_unload() model (1e-5).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "models/embedder.h"
#include "core/file_util.h"
#include "models/kd/kd_model.h"
#include "core/npy.h"
#include "core/safetensors.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const std::string kFix = XV_FIXTURES;
const std::string kModel = kFix + "/models/tiny_bert";
const std::string kPeft = kFix + "/peft";

std::vector<std::string> sentences() {
  return json::parse(xv::read_file(kPeft + "/sentences.json")).get<std::vector<std::string>>();
}

double max_abs(const xv::Tensor& a, const xv::Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel() && i < b.numel(); ++i)
    m = std::max(m, double(std::fabs(a.at(int64_t(i)) - b.at(int64_t(i)))));
  return m;
}

std::string tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("xv_peft_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

// A student whose own LoRA config differs from PEFT's (r 8, alpha 64, other targets): load_adapter must take
// everything from adapter_config.json.
std::unique_ptr<xv::KdModel> fresh_model() {
  xv::LoraConfig c;
  c.r = 8;
  c.alpha = 64;
  c.targets = {"query", "value"};
  return xv::KdModel::load(kModel, "lora", c, 3);
}

TEST(PeftGolden, LoadPeftAdapterGivesPeftEmbeddings) {
  auto m = fresh_model();
  m->load_adapter(kPeft + "/tiny_bert_adapter");
  EXPECT_EQ(m->trainable().size(), 2u * 2u * 6u);  // 2 layers x (query, key, value, 3 dense) x (A, B)
  const xv::Tensor got = m->student_embed(sentences(), false);
  const xv::Tensor want = xv::read_npy(kPeft + "/peft_embeddings.npy");
  const double err = max_abs(got, want);
  EXPECT_LE(err, 1e-5);
  std::printf("PEFT adapter through load_adapter: max |error| %.2e over %lld x %lld\n", err,
              static_cast<long long>(want.dim(0)), static_cast<long long>(want.dim(1)));
}

TEST(PeftGolden, SaveThenLoadRoundTripsBitExactly) {
  auto m = fresh_model();
  m->load_adapter(kPeft + "/tiny_bert_adapter");
  const std::string dir = tmp_dir("roundtrip");
  m->save_adapter(dir);
  // adapter_config.json carries every key PEFT's own file has that this format defines.
  const json ours = json::parse(xv::read_file(dir + "/adapter_config.json"));
  const json peft = json::parse(xv::read_file(kPeft + "/tiny_bert_adapter/adapter_config.json"));
  for (const char* k : {"peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "bias",
                        "use_rslora", "init_lora_weights", "base_model_name_or_path", "fan_in_fan_out",
                        "modules_to_save", "inference_mode", "rank_pattern", "alpha_pattern", "layers_to_transform",
                        "use_dora"}) {
    ASSERT_TRUE(ours.contains(k)) << k;
    ASSERT_TRUE(peft.contains(k)) << k;
    if (std::string(k) == "target_modules") {
      auto a = ours[k].get<std::vector<std::string>>(), b = peft[k].get<std::vector<std::string>>();
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      EXPECT_EQ(a, b);
    } else if (std::string(k) != "base_model_name_or_path") {
      EXPECT_EQ(ours[k], peft[k]) << k;
    }
  }
  EXPECT_EQ(ours["base_model_name_or_path"], kModel);
  // Tensors: the same names as PEFT's file, the same bytes after a round trip.
  auto mine = xv::WeightStore::open_file(dir + "/adapter_model.safetensors");
  auto theirs = xv::WeightStore::open_file(kPeft + "/tiny_bert_adapter/adapter_model.safetensors");
  EXPECT_EQ(mine.names(), theirs.names());
  auto m2 = fresh_model();
  m2->load_adapter(dir);
  auto a = m->trainable(), b = m2->trainable();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    ASSERT_EQ(a[i].value->shape(), b[i].value->shape());
    EXPECT_EQ(0, std::memcmp(a[i].value->data<float>(), b[i].value->data<float>(), sizeof(float) * size_t(a[i].value->numel())))
        << a[i].name;
  }
  fs::remove_all(dir);
}

TEST(PeftGolden, MergedModelGivesMergedEmbeddings) {
  auto m = fresh_model();
  m->load_adapter(kPeft + "/tiny_bert_adapter");
  const std::string dir = tmp_dir("merged");
  m->save_merged(dir);
  for (const char* f : {"config.json", "tokenizer.json", "sentence_bert_config.json", "model.safetensors"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  // Hugging Face names: query/key/value split back, nothing LoRA-specific left.
  auto ws = xv::WeightStore::open_dir(dir);
  auto base = xv::WeightStore::open_dir(kModel);
  EXPECT_EQ(ws.names(), base.names());
  int copied = 0, merged = 0;
  for (const auto& n : base.names()) {
    const auto &a = ws.info(n), &b = base.info(n);
    ASSERT_EQ(a.dtype, b.dtype) << n;
    ASSERT_EQ(a.nbytes, b.nbytes) << n;
    const bool same = std::memcmp(a.data, b.data, a.nbytes) == 0;
    const bool adapted = n.find("attention.self.") != std::string::npos || n.find("dense.weight") != std::string::npos;
    EXPECT_EQ(same, !(adapted && n.find(".weight") != std::string::npos)) << n;  // only adapted weights change
    (same ? copied : merged) += 1;
  }
  EXPECT_EQ(merged, 12);  // 2 layers x (query, key, value, 3 dense)
  auto e = xv::Embedder::load(dir);
  std::vector<xv::EmbedItem> items;
  for (const auto& s : sentences()) items.push_back({s, ""});
  const xv::Tensor got = e->embed(items, {});
  const xv::Tensor want = xv::read_npy(kPeft + "/merged_embeddings.npy");
  const double err = max_abs(got, want);
  EXPECT_LE(err, 1e-5);
  std::printf("merged model through Embedder::load: max |error| %.2e\n", err);
  // And the student with the adapter matches its own merge.
  EXPECT_LE(max_abs(m->student_embed(sentences(), false), got), 1e-5);
  fs::remove_all(dir);
}

TEST(PeftGolden, BadAdapterFolders) {
  auto m = fresh_model();
  auto error_of = [&](const std::string& dir) {
    try {
      m->load_adapter(dir);
    } catch (const xv::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string dir = tmp_dir("bad");
  EXPECT_NE(error_of(dir).find("adapter folder does not exist"), std::string::npos);
  fs::copy(kPeft + "/tiny_bert_adapter", dir, fs::copy_options::recursive);
  json c = json::parse(xv::read_file(dir + "/adapter_config.json"));
  c["use_dora"] = true;
  xv::write_file_atomic(dir + "/adapter_config.json", c.dump());
  EXPECT_NE(error_of(dir).find("'use_dora' is true"), std::string::npos) << error_of(dir);
  c["use_dora"] = false;
  c["target_modules"] = {"query"};  // the file has more tensors than these targets select
  xv::write_file_atomic(dir + "/adapter_config.json", c.dump());
  EXPECT_NE(error_of(dir).find("belongs to no module"), std::string::npos) << error_of(dir);
  c["target_modules"] = {"query", "key", "value", "dense"};
  c["r"] = 8;  // shapes no longer match
  xv::write_file_atomic(dir + "/adapter_config.json", c.dump());
  EXPECT_NE(error_of(dir).find("lora_A.weight"), std::string::npos) << error_of(dir);
  c["r"] = 4;
  c["target_modules"] = "nothing.matches";
  xv::write_file_atomic(dir + "/adapter_config.json", c.dump());
  EXPECT_NE(error_of(dir).find("is a regular expression"), std::string::npos) << error_of(dir);
  // The model is unchanged by failed loads.
  EXPECT_EQ(m->trainable().size(), 2u * 2u * 2u);
  fs::remove_all(dir);
}

}  // namespace
