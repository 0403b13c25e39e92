// PEFT's adapter folder (adapter_model.safetensors + adapter_config.json) and merged models, for every
// backbone: the tensors are named "base_model.model.<module>.lora_{A,B}.weight" and the module paths are the
// Hugging Face checkpoint's, so the merged weight of an adapter is "<module>.weight".
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "models/lora.h"
#include "core/safetensors.h"

namespace xv {

// Writes `dir` atomically, with the fields PEFT's LoraConfig writes.
void save_peft_adapter(const std::string& dir, const std::vector<const LoraAdapter*>& adapters, const LoraConfig& cfg,
                       const std::string& base_model);
// Reads and validates dir/adapter_config.json (what this project supports of PEFT's options); returns the
// config and, in *weights_path, dir/adapter_model.safetensors.
LoraConfig read_peft_adapter_config(const std::string& dir, std::string* weights_path);
// Fills A and B of every adapter from the weights file; every tensor there must belong to one of them.
// extra_prefixes: other places the modules may sit ("bert." in a task model).
void load_peft_tensors(const std::string& weights_path, std::vector<LoraAdapter>& adapters,
                       const std::vector<std::string>& extra_prefixes = {});
// A model folder like `src_dir`, written atomically: model.safetensors as write_safetensors_like writes it, plus the listed files of the
// base folder (and sentence-transformers' module folders, 1_Pooling ..., when asked).
void save_model_like(const std::string& src_dir, const std::string& out, const TensorReplacer& replace,
                     const std::vector<std::string>& required_files, const std::vector<std::string>& optional_files,
                     bool copy_module_folders);
// A model folder like `src_dir` with the tensors of `weights` (checkpoint name -> f32 value) in place of the
// base ones (full fine-tuning); every name must exist in the checkpoint.
void save_model_with_weights(const std::string& src_dir, const std::string& out,
                             const std::map<std::string, Tensor>& weights, const std::vector<std::string>& required_files,
                             const std::vector<std::string>& optional_files, bool copy_module_folders);
// A merged model folder: the weights named in `adapted` become W + scaling B A.
void save_merged_model(const std::string& src_dir, const std::string& out,
                       const std::map<std::string, const LoraAdapter*>& adapted,
                       const std::vector<std::string>& required_files, const std::vector<std::string>& optional_files,
                       bool copy_module_folders);

}  // namespace xv
