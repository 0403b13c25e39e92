#include "models/peft_adapter.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_dir.h"
#include "kernels/ops.h"
#include "core/file_util.h"

namespace xv {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
// A float config value as its shortest decimal (0.1f is written 0.1, as PEFT writes the Python float).
double float_to_json(float v) { return std::stod(fmt::format("{}", v)); }
}  // namespace

void save_peft_adapter(const std::string& dir, const std::vector<const LoraAdapter*>& adapters, const LoraConfig& cfg,
                       const std::string& base_model) {
  StagingDir stage(dir);
  std::vector<NamedTensor> ts;
  for (const LoraAdapter* a : adapters) {
    ts.push_back({a->a_name(), &a->A});
    ts.push_back({a->b_name(), &a->B});
  }
  write_safetensors(stage.file("adapter_model.safetensors"), ts, DType::F32, {{"format", "pt"}});
  // The fields PEFT's LoraConfig writes (defaults where this trainer has no such option); json sorts keys, as
  // PEFT does.
  json c = {{"peft_type", "LORA"},
            {"task_type", nullptr},
            {"base_model_name_or_path", base_model},
            {"revision", nullptr},
            {"inference_mode", true},
            {"r", cfg.r},
            {"target_modules", cfg.targets},
            {"lora_dropout", float_to_json(cfg.dropout)},
            {"fan_in_fan_out", false},
            {"bias", "none"},
            {"use_rslora", cfg.rslora},
            {"modules_to_save", nullptr},
            {"init_lora_weights", cfg.init == "gaussian" ? json("gaussian") : json(true)},
            {"layers_to_transform", nullptr},
            {"layers_pattern", nullptr},
            {"rank_pattern", json::object()},
            {"alpha_pattern", json::object()},
            {"megatron_config", nullptr},
            {"megatron_core", "megatron.core"},
            {"loftq_config", json::object()},
            {"use_dora", false},
            {"layer_replication", nullptr},
            {"auto_mapping", nullptr}};
  if (cfg.alpha == std::floor(cfg.alpha) && std::fabs(cfg.alpha) < 1e9f)
    c["lora_alpha"] = int64_t(cfg.alpha);
  else
    c["lora_alpha"] = float_to_json(cfg.alpha);
  write_file_atomic(stage.file("adapter_config.json"), c.dump(2) + "\n");
  stage.commit();
}

LoraConfig read_peft_adapter_config(const std::string& dir, std::string* weights_path) {
  require_dir(dir, "adapter folder");
  const std::string cfg_path = (fs::path(dir) / "adapter_config.json").string();
  const std::string w_path = (fs::path(dir) / "adapter_model.safetensors").string();
  XV_CHECK(fs::is_regular_file(cfg_path), "{}: no adapter_config.json (not a PEFT adapter folder)", dir);
  if (!fs::is_regular_file(w_path)) {
    XV_CHECK(!fs::exists(fs::path(dir) / "adapter_model.bin"),
             "{}: only adapter_model.bin (a pickle) is there: save the adapter with safe_serialization=True", dir);
    fail("{}: no adapter_model.safetensors", dir);
  }
  json j = json::parse(read_file(cfg_path), nullptr, false);
  XV_CHECK(j.is_object(), "{}: not valid JSON (expected an object)", cfg_path);
  auto has = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
  auto number = [&](const char* k) {
    XV_CHECK(has(k) && j[k].is_number(), "{}: field '{}' must be a number", cfg_path, k);
    return j[k].get<double>();
  };
  auto flag = [&](const char* k) {
    if (!has(k)) return false;
    XV_CHECK(j[k].is_boolean(), "{}: field '{}' must be true or false", cfg_path, k);
    return j[k].get<bool>();
  };
  auto empty_or_null = [&](const char* k) { return !has(k) || (j[k].is_object() || j[k].is_array() ? j[k].empty() : false); };
  XV_CHECK(j.value("peft_type", "") == "LORA", "{}: field 'peft_type' is '{}', expected 'LORA'", cfg_path,
           j.contains("peft_type") && j["peft_type"].is_string() ? j["peft_type"].get<std::string>() : "");
  XV_CHECK(!has("bias") || j["bias"] == "none", "{}: field 'bias' must be \"none\" (trained biases are not supported)",
           cfg_path);
  for (const char* k : {"fan_in_fan_out", "use_dora", "lora_bias"})
    XV_CHECK(!flag(k), "{}: field '{}' is true, which is not supported", cfg_path, k);
  for (const char* k : {"modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform", "exclude_modules",
                        "layer_replication"})
    XV_CHECK(empty_or_null(k), "{}: field '{}' is set, which is not supported", cfg_path, k);
  LoraConfig c;
  const double r = number("r");
  XV_CHECK(r >= 1 && r == std::floor(r), "{}: field 'r' must be a positive integer", cfg_path);
  c.r = int64_t(r);
  c.alpha = float(number("lora_alpha"));
  c.dropout = has("lora_dropout") ? float(number("lora_dropout")) : 0.0f;
  c.rslora = flag("use_rslora");
  c.init = has("init_lora_weights") && j["init_lora_weights"] == "gaussian" ? "gaussian" : "kaiming";
  XV_CHECK(has("target_modules"), "{}: field 'target_modules' is missing", cfg_path);
  const json& tm = j["target_modules"];
  // PEFT also accepts one string, a regular expression over the full module names: not supported here (no
  // <regex>: GCC 12 warns inside it under the sanitizers, and the project builds with -Werror).
  XV_CHECK(!tm.is_string(),
           "{}: field 'target_modules' is a regular expression ('{}'), which is not supported: list the module names",
           cfg_path, tm.is_string() ? tm.get<std::string>() : "");
  XV_CHECK(tm.is_array(), "{}: field 'target_modules' must be a list of module names", cfg_path);
  c.targets.clear();
  for (const auto& t : tm) {
    XV_CHECK(t.is_string(), "{}: field 'target_modules' must hold strings", cfg_path);
    c.targets.push_back(t.get<std::string>());
  }
  if (weights_path) *weights_path = w_path;
  return c;
}

void load_peft_tensors(const std::string& w_path, std::vector<LoraAdapter>& adapters,
                       const std::vector<std::string>& extra_prefixes) {
  auto ws = WeightStore::open_file(w_path);
  std::set<std::string> used;
  for (auto& a : adapters) {
    std::string pa = a.a_name(), pb = a.b_name();
    for (const auto& pre : extra_prefixes)  // e.g. a task model (BertFor...) puts the encoder under "bert."
      if (!ws.has(pa) && ws.has("base_model.model." + pre + a.module + ".lora_A.weight")) {
        pa = "base_model.model." + pre + a.module + ".lora_A.weight";
        pb = "base_model.model." + pre + a.module + ".lora_B.weight";
      }
    XV_CHECK(ws.has(pa), "{}: tensor '{}' is missing (target_modules match {})", w_path, pa, a.module);
    XV_CHECK(ws.has(pb), "{}: tensor '{}' is missing (target_modules match {})", w_path, pb, a.module);
    a.A = ws.get(pa, {a.r, a.in}).to(a.dA.device());
    a.B = ws.get(pb, {a.out, a.r}).to(a.dB.device());
    used.insert(pa);
    used.insert(pb);
  }
  for (const auto& n : ws.names())
    XV_CHECK(used.count(n), "{}: tensor '{}' belongs to no module that target_modules selects in this model", w_path, n);
}

void save_model_like(const std::string& src_dir, const std::string& out, const TensorReplacer& replace,
                     const std::vector<std::string>& required_files, const std::vector<std::string>& optional_files,
                     bool copy_module_folders) {
  const WeightStore ws = WeightStore::open_dir(src_dir);
  StagingDir stage(out);
  write_safetensors_like(stage.file("model.safetensors"), ws, replace);
  const fs::path src(src_dir);
  for (const auto& f : required_files) {
    XV_CHECK(fs::is_regular_file(src / f), "{}: {} is missing", src_dir, f);
    fs::copy_file(src / f, fs::path(stage.path()) / f);
  }
  for (const auto& f : optional_files)
    if (fs::is_regular_file(src / f)) fs::copy_file(src / f, fs::path(stage.path()) / f);
  if (copy_module_folders)  // sentence-transformers module folders: 1_Pooling, 2_Normalize, ...
    for (const auto& e : fs::directory_iterator(src)) {
      const std::string n = e.path().filename().string();
      const size_t us = n.find('_');
      if (e.is_directory() && us != std::string::npos && us > 0 && n.find_first_not_of("0123456789") == us)
        fs::copy(e.path(), fs::path(stage.path()) / n, fs::copy_options::recursive);
    }
  stage.commit();
}

void save_model_with_weights(const std::string& src_dir, const std::string& out,
                             const std::map<std::string, Tensor>& weights, const std::vector<std::string>& required_files,
                             const std::vector<std::string>& optional_files, bool copy_module_folders) {
  {
    const WeightStore ws = WeightStore::open_dir(src_dir);
    for (const auto& [n, t] : weights) ws.info(n);  // throws naming the folder when the checkpoint lacks one
  }
  auto replace = [&](const std::string& name, Tensor* t) {
    auto it = weights.find(name);
    if (it == weights.end()) return false;
    *t = it->second;
    return true;
  };
  save_model_like(src_dir, out, replace, required_files, optional_files, copy_module_folders);
}

void save_merged_model(const std::string& src_dir, const std::string& out,
                       const std::map<std::string, const LoraAdapter*>& adapted,
                       const std::vector<std::string>& required_files, const std::vector<std::string>& optional_files,
                       bool copy_module_folders) {
  const WeightStore ws = WeightStore::open_dir(src_dir);
  for (const auto& [w, a] : adapted)
    XV_CHECK(ws.has(w), "{}: the model has no weight '{}' to merge the adapter into", ws.where(), w);
  auto merge = [&](const std::string& name, Tensor* t) {
    auto it = adapted.find(name);
    if (it == adapted.end()) return false;
    // W (out, in) += scaling * B (out, r) A (r, in), as PEFT's merge: the product first, then scaled, then
    // added; in f32 on the adapter's device, written back in the checkpoint's dtype.
    const LoraAdapter& a = *it->second;
    *t = ws.get(name, ws.info(name).shape).to(a.A.device());
    Tensor delta({a.out, a.in}, DType::F32, a.A.device());
    ops::gemm(a.B, false, a.A, false, delta, 1.0f, 0.0f);
    ops::scale(delta, a.scaling);
    ops::add(*t, delta);
    return true;
  };
  save_model_like(src_dir, out, merge, required_files, optional_files, copy_module_folders);
}

}  // namespace xv
