#include "train/train_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <variant>

#include "core/error.h"
#include "core/file_util.h"
#include "tokenizer/unicode.h"

namespace xv {

namespace {

using FieldPtr = std::variant<int64_t*, double*, bool*, std::string*, std::vector<std::string>*, std::vector<double>*>;

struct KeySpec {
  const char* key;
  FieldPtr (*field)(TrainConfig&);
  bool nullable;  // null means "unset" (optional paths)
};

#define XV_KEY(name, member, nullable) {name, [](TrainConfig& c) -> FieldPtr { return &c.member; }, nullable}

// The schema, in the order the resolved YAML is written (docs/config.md documents each key).
const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> s = {
      XV_KEY("model", model, false),
      XV_KEY("model.weight_dtype", model_weight_dtype, false),
      XV_KEY("data.train", data.train, false),
      XV_KEY("data.image_root", data.image_root, true),
      XV_KEY("data.teacher_cache", data.teacher_cache, true),
      XV_KEY("data.workers", data.workers, false),
      XV_KEY("data.prefetch", data.prefetch, false),
      XV_KEY("data.bucket_window", data.bucket_window, false),
      XV_KEY("output_dir", output_dir, false),
      XV_KEY("seed", seed, false),
      XV_KEY("trainable", trainable, false),
      XV_KEY("lora.r", lora.r, false),
      XV_KEY("lora.alpha", lora.alpha, false),
      XV_KEY("lora.dropout", lora.dropout, false),
      XV_KEY("lora.targets", lora.targets, false),
      XV_KEY("lora.init", lora.init, false),
      XV_KEY("lora.rslora", lora.rslora, false),
      XV_KEY("train.epochs", train.epochs, false),
      XV_KEY("train.max_steps", train.max_steps, false),
      XV_KEY("train.batch_size", train.batch_size, false),
      XV_KEY("train.grad_accum", train.grad_accum, false),
      XV_KEY("train.lr", train.lr, false),
      XV_KEY("train.schedule", train.schedule, false),
      XV_KEY("train.warmup_steps", train.warmup_steps, false),
      XV_KEY("train.weight_decay", train.weight_decay, false),
      XV_KEY("train.betas", train.betas, false),
      XV_KEY("train.eps", train.eps, false),
      XV_KEY("train.max_grad_norm", train.max_grad_norm, false),
      XV_KEY("train.checkpointing", train.checkpointing, false),
      XV_KEY("train.image_prefix_loss", train.image_prefix_loss, false),
      XV_KEY("train.threads", train.threads, false),
      XV_KEY("checkpoint.every_steps", checkpoint.every_steps, false),
      XV_KEY("checkpoint.keep", checkpoint.keep, false),
      XV_KEY("log.every_steps", log.every_steps, false),
      XV_KEY("parallel.strategy", parallel.strategy, false),
      XV_KEY("parallel.deterministic", parallel.deterministic, false),
      XV_KEY("parallel.replicate_trainable", parallel.replicate_trainable, false),
      XV_KEY("parallel.prefetch", parallel.prefetch, false),
      XV_KEY("parallel.ranks_per_node", parallel.ranks_per_node, false),
      XV_KEY("parallel.vision_layers_per_unit", parallel.vision_layers_per_unit, false),
      XV_KEY("parallel.collective_timeout_s", parallel.collective_timeout_s, false),
      XV_KEY("export.adapter", export_.adapter, false),
      XV_KEY("export.merged", export_.merged, false),
  };
  return s;
}

#undef XV_KEY

const std::vector<std::string> kSections = {"data", "lora", "train", "checkpoint", "log", "parallel", "export"};

// Names people bring from Hugging Face TrainingArguments / PEFT LoraConfig.
const std::map<std::string, std::string>& aliases() {
  static const std::map<std::string, std::string> a = {
      {"learning_rate", "train.lr"},
      {"num_train_epochs", "train.epochs"},
      {"per_device_train_batch_size", "train.batch_size"},
      {"gradient_accumulation_steps", "train.grad_accum"},
      {"lr_scheduler_type", "train.schedule"},
      {"adam_epsilon", "train.eps"},
      {"adam_beta1", "train.betas"},
      {"adam_beta2", "train.betas"},
      {"gradient_checkpointing", "train.checkpointing"},
      {"save_steps", "checkpoint.every_steps"},
      {"save_total_limit", "checkpoint.keep"},
      {"logging_steps", "log.every_steps"},
      {"model_name_or_path", "model"},
      {"lora_r", "lora.r"},
      {"rank", "lora.r"},
      {"lora_alpha", "lora.alpha"},
      {"lora_dropout", "lora.dropout"},
      {"target_modules", "lora.targets"},
      {"use_rslora", "lora.rslora"},
      {"init_lora_weights", "lora.init"},
  };
  return a;
}

const KeySpec* find_key(const std::string& key) {
  for (const auto& k : schema())
    if (key == k.key) return &k;
  return nullptr;
}

bool is_section(const std::string& key) { return std::find(kSections.begin(), kSections.end(), key) != kSections.end(); }

std::string leaf_of(const std::string& key) {
  const size_t dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}
std::string section_of(const std::string& key) {
  const size_t dot = key.find('.');
  return dot == std::string::npos ? "" : key.substr(0, dot);
}

// The nearest valid key, or "" when nothing is close enough to be a useful guess.
std::string suggest(const std::string& unknown) {
  const std::string leaf = leaf_of(unknown);
  if (auto it = aliases().find(leaf); it != aliases().end()) return it->second;
  std::vector<std::string> cands;
  for (const auto& k : schema()) cands.push_back(k.key);
  for (const auto& s : kSections) cands.push_back(s);
  for (const auto& c : cands)  // the right name in the wrong section
    if (leaf_of(c) == leaf && c != unknown) return c;
  std::string best;
  size_t best_d = SIZE_MAX;
  // A misspelt Hugging Face name ("lerning_rate"): its key.
  for (const auto& [alias, key] : aliases())
    if (size_t d = edit_distance(leaf, alias); d < best_d) best_d = d, best = key;
  if (best_d > std::max<size_t>(2, leaf.size() / 4)) best_d = SIZE_MAX, best.clear();
  for (const auto& c : cands) {
    const std::string cl = leaf_of(c);
    size_t d = edit_distance(leaf, cl) + (section_of(c) == section_of(unknown) ? 0 : 2);
    if (leaf.size() >= 3 && (cl.rfind(leaf, 0) == 0 || leaf.rfind(cl, 0) == 0) && section_of(c) == section_of(unknown))
      d = std::min<size_t>(d, 1);  // a prefix: "warmup" for "warmup_steps"
    if (d < best_d) best_d = d, best = c;
  }
  return best_d <= std::max<size_t>(2, leaf.size() / 3) ? best : "";
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& where) {
  const std::string s = suggest(key);
  const std::string sec = section_of(key);
  std::string valid;
  for (const auto& k : schema())
    if (section_of(k.key) == sec) valid += (valid.empty() ? "" : ", ") + std::string(sec.empty() ? k.key : leaf_of(k.key));
  if (sec.empty())
    for (const auto& k : kSections) valid += ", " + k;
  fail("{}: unknown key '{}'{}; valid keys{}: {}", where, key, s.empty() ? "" : " (did you mean '" + s + "'?)",
       sec.empty() ? " at the top level" : " in '" + sec + "'", valid);
}

std::string describe(const YAML::Node& n) {
  if (n.IsNull()) return "null";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "'" + n.Scalar() + "'";
}

const char* type_name(const FieldPtr& f) {
  switch (f.index()) {
    case 0: return "an integer";
    case 1: return "a number";
    case 2: return "a boolean (true or false)";
    case 3: return "a string";
    case 4: return "a list of strings, e.g. [query, value]";
    default: return "a list of numbers, e.g. [0.9, 0.999]";
  }
}

template <typename T>
bool scalar_as(const YAML::Node& n, T* out) {
  if (!n.IsScalar()) return false;
  try {
    *out = n.as<T>();
    return true;
  } catch (const YAML::Exception&) {
    return false;
  }
}

// Sets one field from a YAML node, checking the type.
void set_field(TrainConfig& cfg, const KeySpec& spec, const YAML::Node& n, const std::string& where) {
  FieldPtr f = spec.field(cfg);
  auto bad = [&]() { fail("{}: {} must be {}, found {}", where, spec.key, type_name(f), describe(n)); };
  if (n.IsNull()) {
    if (spec.nullable) {
      *std::get<std::string*>(f) = "";
      return;
    }
    bad();
  }
  bool ok = std::visit(
      [&](auto* p) -> bool {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, double>) {
          if (!scalar_as(n, p)) return false;
          XV_CHECK(std::isfinite(*p), "{}: {} must be a finite number, found {}", where, spec.key, describe(n));
          return true;
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          if (!n.IsSequence()) return false;
          p->clear();
          for (const auto& e : n) {
            if (!e.IsScalar()) return false;
            p->push_back(e.Scalar());
          }
          return true;
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          if (!n.IsSequence()) return false;
          p->clear();
          for (const auto& e : n) {
            double v;
            if (!scalar_as(e, &v) || !std::isfinite(v)) return false;
            p->push_back(v);
          }
          return true;
        } else {
          return scalar_as(n, p);
        }
      },
      f);
  if (!ok) bad();
  // YAML text is Unicode, but yaml-cpp passes invalid UTF-8 through; train_config_yaml could not write it back.
  auto utf8 = [&](const std::string& s) {
    XV_CHECK(tok::utf8_invalid_at(s) == std::string::npos, "{}: {} must be UTF-8 text, found invalid bytes", where,
             spec.key);
  };
  if (auto* s = std::get_if<std::string*>(&f)) utf8(**s);
  if (auto* v = std::get_if<std::vector<std::string>*>(&f))
    for (const auto& s : **v) utf8(s);
}

struct Entry {
  YAML::Node node;
  std::string where;
};

std::string mark_of(const std::string& source, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  return m.line >= 0 ? source + ":" + std::to_string(m.line + 1) : source;
}

// The keys under `model:` when it is a mapping: path (the folder, key "model") and weight_dtype.
void flatten_model(const YAML::Node& map, const std::string& source, std::map<std::string, Entry>& flat) {
  for (const auto& kv : map) {
    XV_CHECK(kv.first.IsScalar(), "{}: keys must be plain names, found {}", mark_of(source, kv.first),
             describe(kv.first));
    const std::string leaf = kv.first.Scalar(), where = mark_of(source, kv.first);
    const std::string key = leaf == "path" ? "model" : "model." + leaf;
    if (leaf == "path" || find_key(key)) {
      XV_CHECK(!flat.count(key), "{}: key 'model.{}' is given twice", where, leaf);
      flat[key] = {kv.second, where};
      continue;
    }
    fail("{}: unknown key 'model.{}' (model takes path and weight_dtype)", where, leaf);
  }
}

void flatten(const YAML::Node& map, const std::string& prefix, const std::string& source,
             std::map<std::string, Entry>& flat) {
  for (const auto& kv : map) {
    XV_CHECK(kv.first.IsScalar(), "{}: keys must be plain names, found {}", mark_of(source, kv.first),
             describe(kv.first));
    const std::string key = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    const std::string where = mark_of(source, kv.first);
    if (prefix.empty() && key == "model" && kv.second.IsMap()) {  // model: {path: DIR, weight_dtype: ...}
      std::map<std::string, Entry> sub;
      flatten_model(kv.second, source, sub);
      for (auto& [k, e] : sub) {
        XV_CHECK(!flat.count(k), "{}: key '{}' is given twice (first at {})", e.where, k, flat[k].where);
        flat[k] = e;
      }
      continue;
    }
    if (prefix.empty() && is_section(key)) {
      if (kv.second.IsNull()) continue;  // "lora:" with nothing under it
      XV_CHECK(kv.second.IsMap(), "{}: '{}' is a section and must be a mapping of its keys, found {}", where, key,
               describe(kv.second));
      flatten(kv.second, key, source, flat);
      continue;
    }
    if (!find_key(key)) unknown_key(key, where);
    XV_CHECK(!flat.count(key), "{}: key '{}' is given twice (first at {})", where, key, flat[key].where);
    flat[key] = {kv.second, where};
  }
}

void validate(const TrainConfig& c, const std::map<std::string, Entry>& flat, const std::string& source) {
  auto where = [&](const char* key) {
    auto it = flat.find(key);
    return it == flat.end() ? source + " (default)" : it->second.where;
  };
  const std::pair<const char*, const std::string*> required[] = {
      {"model", &c.model}, {"data.train", &c.data.train}, {"output_dir", &c.output_dir}};
  for (const auto& [key, value] : required)
    XV_CHECK(!value->empty(), "{}: missing required key '{}' (see docs/config.md)", flat.count(key) ? where(key) : source,
             key);
  auto check = [&](bool ok, const char* key, const char* what) {
    XV_CHECK(ok, "{}: {} must be {}, found {}", where(key), key, what, train_config_value(c, key));
  };
  check(c.data.workers >= 0, "data.workers", ">= 0 (0: prepare on the reader's I/O thread)");
  check(c.data.prefetch >= 1, "data.prefetch", ">= 1");
  check(c.data.bucket_window >= 0, "data.bucket_window", ">= 0 (0: no length bucketing)");
  check(c.model_weight_dtype == "f32" || c.model_weight_dtype == "bf16", "model.weight_dtype", "f32 or bf16");
  check(c.trainable == "lora" || c.model_weight_dtype == "f32", "model.weight_dtype",
        "f32 with trainable 'full' (every weight trains, in f32)");
  check(c.trainable == "lora" || c.trainable == "full", "trainable", "lora or full");
  check(c.lora.r >= 1, "lora.r", ">= 1");
  check(c.lora.alpha > 0, "lora.alpha", "> 0");
  check(c.lora.dropout >= 0 && c.lora.dropout < 1, "lora.dropout", "in [0, 1)");
  check(c.lora.init == "kaiming" || c.lora.init == "gaussian", "lora.init", "kaiming or gaussian");
  for (const auto& t : c.lora.targets) check(!t.empty(), "lora.targets", "a list of non-empty module names");
  // Absent means the backbone's default; an explicit empty list would train nothing (and is not the default).
  if (flat.count("lora.targets"))
    check(!c.lora.targets.empty(), "lora.targets",
          "a non-empty list of module names, e.g. [query, value] (leave the key out for the backbone's default)");
  check(c.train.epochs >= 1, "train.epochs", ">= 1");
  check(c.train.max_steps >= 0, "train.max_steps", ">= 0 (0: derived from train.epochs)");
  check(c.train.batch_size >= 1, "train.batch_size", ">= 1");
  check(c.train.grad_accum >= 1, "train.grad_accum", ">= 1");
  check(c.train.lr > 0, "train.lr", "> 0");
  check(c.train.schedule == "cosine" || c.train.schedule == "linear" || c.train.schedule == "constant",
        "train.schedule", "cosine, linear or constant");
  check(c.train.warmup_steps >= 0, "train.warmup_steps", ">= 0");
  check(c.train.weight_decay >= 0, "train.weight_decay", ">= 0");
  check(c.train.betas.size() == 2 && c.train.betas[0] >= 0 && c.train.betas[0] < 1 && c.train.betas[1] >= 0 &&
            c.train.betas[1] < 1,
        "train.betas", "two numbers in [0, 1)");
  check(c.train.eps > 0, "train.eps", "> 0");
  check(c.train.max_grad_norm >= 0, "train.max_grad_norm", ">= 0 (0: no clipping)");
  check(c.train.threads >= 0, "train.threads", ">= 0 (0: all cores)");
  check(c.checkpoint.every_steps >= 0, "checkpoint.every_steps", ">= 0 (0: only at the end)");
  check(c.checkpoint.keep >= 1, "checkpoint.keep", ">= 1");
  check(c.log.every_steps >= 1, "log.every_steps", ">= 1");
  check(c.parallel.strategy == "full" || c.parallel.strategy == "grad_op" || c.parallel.strategy == "none" ||
            c.parallel.strategy == "hybrid",
        "parallel.strategy", "full, grad_op, none or hybrid");
  check(c.parallel.ranks_per_node >= 0, "parallel.ranks_per_node", ">= 0 (0: from the launcher)");
  check(c.parallel.vision_layers_per_unit >= 1 && c.parallel.vision_layers_per_unit <= 1024,
        "parallel.vision_layers_per_unit", "in [1, 1024]");
  check(c.parallel.collective_timeout_s >= 0, "parallel.collective_timeout_s", ">= 0 (0: wait for ever)");
}

}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

LoraConfig TrainConfig::lora_config() const {
  LoraConfig l;
  l.r = lora.r;
  l.alpha = float(lora.alpha);
  l.dropout = float(lora.dropout);
  l.rslora = lora.rslora;
  l.init = lora.init;
  l.targets = lora.targets;
  XV_CHECK(!l.targets.empty(), "lora.targets is empty (resolve the backbone default first)");
  return l;
}

DType TrainConfig::weight_dtype() const { return model_weight_dtype == "bf16" ? DType::BF16 : DType::F32; }

ops::AdamWParams TrainConfig::adamw_config() const {
  ops::AdamWParams a;
  a.lr = float(train.lr);
  a.beta1 = float(train.betas.at(0));
  a.beta2 = float(train.betas.at(1));
  a.eps = float(train.eps);
  a.weight_decay = float(train.weight_decay);
  return a;
}

TrainConfig parse_train_config(const std::string& text, const std::string& source,
                               const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    fail("{}:{}:{}: not valid YAML: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg);
  } catch (const YAML::Exception& e) {
    fail("{}: not valid YAML: {}", source, e.what());
  }
  XV_CHECK(root.IsMap() || root.IsNull(), "{}: the config must be a mapping of keys (model, data, train, ...), found {}",
           source, describe(root));
  std::map<std::string, Entry> flat;
  if (root.IsMap()) flatten(root, "", source, flat);
  for (const auto& o : overrides) {
    const std::string where = "--set " + o;
    const size_t eq = o.find('=');
    XV_CHECK(eq != std::string::npos && eq > 0, "{}: expected key=value, e.g. --set train.lr=2e-5", where);
    std::string key = o.substr(0, eq);
    key.erase(0, key.find_first_not_of(" \t"));
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key == "model.path") key = "model";
    XV_CHECK(!is_section(key), "{}: '{}' is a section: set its keys one by one, e.g. --set {}.{}", where, key, key,
             leaf_of([&] {
               for (const auto& k : schema())
                 if (section_of(k.key) == key) return std::string(k.key);
               return std::string();
             }()));
    if (!find_key(key)) unknown_key(key, where);
    YAML::Node v;
    try {
      v = YAML::Load(o.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      fail("{}: the value is not valid YAML: {}", where, e.msg);
    }
    flat[key] = {v, where};
  }
  TrainConfig cfg;
  for (const auto& spec : schema()) {
    auto it = flat.find(spec.key);
    if (it != flat.end()) set_field(cfg, spec, it->second.node, it->second.where);
  }
  validate(cfg, flat, source);
  return cfg;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_train_config(read_file(path), path, overrides);
}

std::vector<std::string> train_config_keys() {
  std::vector<std::string> out;
  for (const auto& k : schema()) out.push_back(k.key);
  return out;
}

std::string train_config_value(const TrainConfig& c, const std::string& key) {
  const KeySpec* spec = find_key(key);
  if (!spec) return "";
  auto quote = [](const std::string& s) { return nlohmann::json(s).dump(); };
  return std::visit(
      [&](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          return fmt::format("{}", *p);
        } else if constexpr (std::is_same_v<T, double>) {
          return fmt::format("{}", *p);  // shortest text that reads back to the same double
        } else if constexpr (std::is_same_v<T, bool>) {
          return *p ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::string>) {
          return quote(*p);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::string s = "[";
          for (size_t i = 0; i < p->size(); ++i) s += (i ? ", " : "") + quote((*p)[i]);
          return s + "]";
        } else {
          std::string s = "[";
          for (size_t i = 0; i < p->size(); ++i) s += (i ? ", " : "") + fmt::format("{}", (*p)[i]);
          return s + "]";
        }
      },
      spec->field(const_cast<TrainConfig&>(c)));
}

std::string train_config_yaml(const TrainConfig& c) {
  std::string out = "# xvlm2vec train config, resolved (every key; see docs/config.md)\n";
  std::string section;
  for (const auto& spec : schema()) {
    const std::string key = spec.key;
    // model is written as a mapping: path (the folder) and weight_dtype.
    const std::string sec = key == "model" ? "model" : section_of(key), leaf = key == "model" ? "path" : leaf_of(key);
    if (sec != section) {
      section = sec;
      if (!sec.empty()) out += sec + ":\n";
    }
    // Unresolved targets (empty: the backbone's default) are left out, which reads back as the default.
    if (key == "lora.targets" && c.lora.targets.empty()) {
      out += "  # targets: the backbone's default\n";
      continue;
    }
    out += (sec.empty() ? "" : "  ") + leaf + ": " + train_config_value(c, key) + "\n";
  }
  return out;
}

}  // namespace xv
