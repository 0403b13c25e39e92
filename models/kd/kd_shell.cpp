#include "models/kd/kd_shell.h"

#include <filesystem>
#include <map>

#include "core/safetensors.h"
#include "kernels/ops.h"
#include "models/peft_adapter.h"

namespace xv {

namespace fs = std::filesystem;

KdShell::KdShell(std::string arch, const std::string& dir, const std::string& trainable, const LoraConfig& lcfg,
                 uint64_t seed, const LoadOptions& o)
    : arch_(std::move(arch)), dir_(dir), lcfg_(lcfg), seed_(seed), load_(o) {
  XV_CHECK(trainable == "lora" || trainable == "full", "{}: trainable '{}' is not supported (lora or full)", arch_,
           trainable);
  full_ = trainable == "full";
  XV_CHECK(!full_ || o.weight_dtype == DType::F32,
           "{}: trainable 'full' trains every weight, which is kept in f32: set model.weight_dtype to f32 (it is {})",
           arch_, dtype_name(o.weight_dtype));
  defer_ = o.shapes_only && !full_;
  load_.shapes_only = defer_;
  tok_ = Tokenizer::from_file((fs::path(dir) / "tokenizer.json").string());
}

void KdShell::for_each_weight(const std::function<void(const std::string&, const Tensor&)>& fn) const {
  const_cast<KdShell*>(this)->for_each_weight([&](const std::string& n, Tensor& w, Tensor*) { fn(n, w); });
}

std::vector<TrainableTensor> KdShell::trainable() {
  std::vector<TrainableTensor> out;
  if (full_) {
    for_each_weight([&](const std::string& n, Tensor& w, Tensor* g) { out.push_back({n, &w, g}); });
    return out;
  }
  for (auto& a : adapters()) {
    out.push_back({a.a_name(), &a.A, &a.dA});
    out.push_back({a.b_name(), &a.B, &a.dB});
  }
  return out;
}

void KdShell::check_step(const std::vector<TrainPair>& batch, const KdStepOptions& opt) const {
  XV_CHECK(!batch.empty(), "kd step: empty batch");
  XV_CHECK(!full_ || opt.teacher_en,
           "kd step: trainable 'full' needs teacher targets from a teacher cache (set data.teacher_cache, built by "
           "`xvlm2vec corpus cache-teacher`): with every weight trained, the student cannot be its own teacher");
}

void KdShell::attach_unit_loaders(std::vector<WeightUnit>& units) const {
  if (!defer_) return;
  std::map<const Tensor*, std::string> names;
  for_each_weight([&](const std::string& n, const Tensor& t) { names[&t] = n; });
  auto ws = std::make_shared<const WeightStore>(WeightStore::open_dir(dir_));
  for (WeightUnit& w : units) {
    std::vector<std::vector<std::string>> src;
    for (const Tensor* t : w.tensors) src.push_back(checkpoint_names(names.at(t)));
    w.load = checkpoint_loader(ws, w.tensors, std::move(src));
  }
}

// ---- PEFT adapter and merged-model export (PEFT's formats: models/peft_adapter.h) ----

void KdShell::save_adapter(const std::string& dir) const {
  XV_CHECK(!full_, "{}: full fine-tuning has no adapter; export the merged model instead", dir);
  std::vector<const LoraAdapter*> as;
  for (const auto& a : adapters()) as.push_back(&a);
  save_peft_adapter(dir, as, lcfg_, dir_);
}

void KdShell::load_adapter(const std::string& dir) {
  XV_CHECK(!full_, "{}: cannot load an adapter into a model with trainable 'full' (full fine-tuning has no adapter)",
           dir);
  std::string w_path;
  const LoraConfig c = read_peft_adapter_config(dir, &w_path);
  bool made = false;
  try {
    install_adapters(c, [&](std::vector<LoraAdapter>& fresh) {
      made = true;
      load_peft_tensors(w_path, fresh, peft_prefixes());
    });
  } catch (const Error& e) {
    if (made) throw;  // the tensors did not load: load_peft_tensors names the file
    fail("{}/adapter_config.json: {}", dir, e.what());
  }
  lcfg_ = c;
}

void KdShell::save_merged(const std::string& out) const {
  if (full_) return save_merged_full(out);
  std::map<std::string, const LoraAdapter*> adapted;
  for (const auto& a : adapters()) {
    const std::vector<std::string> n = checkpoint_names(a.module + ".weight");
    XV_CHECK(n.size() == 1, "merge: adapter {} sits on a fused weight", a.module);
    adapted[n[0]] = &a;
  }
  const MergedFiles f = merged_files();
  save_merged_model(dir_, out, adapted, f.required, f.optional, f.module_folders);
}

// The current weights as the base checkpoint's model.safetensors: every tensor keeps its name, shape and dtype
// (a fused tensor split back into its parts, in order, each taking its checkpoint shape); tensors the model
// does not use are copied as they are. The other files come from the base folder, as for a LoRA merge.
void KdShell::save_merged_full(const std::string& out) const {
  const WeightStore ws = WeightStore::open_dir(dir_);
  std::map<std::string, Tensor> cur;  // checkpoint name -> current value
  for_each_weight([&](const std::string& name, const Tensor& w) {
    int64_t off = 0;
    for (const std::string& part : checkpoint_names(name)) {
      const Shape& s = ws.info(part).shape;
      const int64_t n = shape_numel(s);
      XV_CHECK(off + n <= w.numel(), "{}: {} holds {} elements, its checkpoint parts more", dir_, name, w.numel());
      Tensor t(s, DType::F32, w.device());
      ops::copy(w.flat().col_range(off, n), t.flat());
      cur[part] = std::move(t);
      off += n;
    }
    XV_CHECK(off == w.numel(), "{}: {} holds {} elements, its checkpoint parts {}", dir_, name, w.numel(), off);
  });
  const MergedFiles f = merged_files();
  save_model_with_weights(dir_, out, cur, f.required, f.optional, f.module_folders);
}

}  // namespace xv
