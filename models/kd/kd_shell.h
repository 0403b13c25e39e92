// What the self-KD models of every backbone share, written once: the base folder, the adapters' config and
// seed, LoRA or full fine-tuning, the tokenizer, the unit access; the trainable list, PEFT adapter save and
// load, the merged export (LoRA merged into W, or the fine-tuned weights written back under the checkpoint's
// names, fused tensors split), and reading the frozen units from the checkpoint. A backbone (bert_kd.cpp,
// phi3v_kd.cpp) adds its step and answers the few questions below about its weights.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/kd/kd_model.h"
#include "models/lora.h"
#include "tokenizer/tokenizer.h"

namespace xv {

// The files a merged model folder copies from the base folder beside model.safetensors.
struct MergedFiles {
  std::vector<std::string> required, optional;
  bool module_folders = false;  // sentence-transformers' 1_Pooling, 2_Normalize, ...
};

class KdShell : public KdModel {
 public:
  const std::string& arch() const override { return arch_; }
  std::vector<TrainableTensor> trainable() override;
  void set_unit_access(UnitAccess* access) override { units_ = full_ ? nullptr : access; }
  void save_adapter(const std::string& dir) const override;
  void load_adapter(const std::string& dir) override;
  void save_merged(const std::string& dir) const override;

 protected:
  KdShell(std::string arch, const std::string& dir, const std::string& trainable, const LoraConfig& lcfg,
          uint64_t seed, const LoadOptions& o);

  // ---- The backbone's answers ----
  // The student's adapters (empty with trainable 'full').
  virtual std::vector<LoraAdapter>& adapters() = 0;
  virtual const std::vector<LoraAdapter>& adapters() const = 0;
  // Replaces the adapters with new ones for config c, after fill(new adapters) has set their values (when
  // anything throws, the old adapters stay).
  virtual void install_adapters(const LoraConfig& c, const std::function<void(std::vector<LoraAdapter>&)>& fill) = 0;
  // fn(name, weight, gradient) for every weight of the embedding path (full fine-tuning trains them all; the
  // gradient is null unless trainable is 'full'), under the names trainable() saves them with.
  virtual void for_each_weight(const std::function<void(const std::string&, Tensor&, Tensor*)>& fn) = 0;
  void for_each_weight(const std::function<void(const std::string&, const Tensor&)>& fn) const;
  // The checkpoint tensors a weight of for_each_weight is made of, in order: its own name (with the
  // checkpoint's prefix), or the parts a fused tensor concatenates (q, k, v).
  virtual std::vector<std::string> checkpoint_names(const std::string& name) const = 0;
  // Other places PEFT may have put the modules in an adapter file ("bert." in a task model).
  virtual std::vector<std::string> peft_prefixes() const { return {}; }
  virtual MergedFiles merged_files() const = 0;

  // ---- For the backbone ----
  // The checks every step makes: a batch, and teacher targets when the student cannot be its own teacher.
  void check_step(const std::vector<TrainPair>& batch, const KdStepOptions& opt) const;
  // Sets WeightUnit::load on every unit when the frozen base was laid out shape-only (LoadOptions::shapes_only).
  void attach_unit_loaders(std::vector<WeightUnit>& units) const;

  std::string arch_;
  std::string dir_;  // the base model folder
  LoraConfig lcfg_;  // the adapters' config (as loaded by load_adapter, after one)
  uint64_t seed_ = 0;
  LoadOptions load_;      // how the model was laid out
  bool defer_ = false;    // the frozen base is shape-only until a sharding wrapper reads it (frozen_units)
  bool full_ = false;     // trainable 'full': every weight of the embedding path trains
  std::unique_ptr<Tokenizer> tok_;
  UnitAccess* units_ = nullptr;  // set by a sharding wrapper (frozen_units)

 private:
  void save_merged_full(const std::string& dir) const;
};

}  // namespace xv
