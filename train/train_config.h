// The training config (`xvlm2vec train CONFIG.yaml`): a YAML file with the schema of docs/config.md,
// then `--set key=value` overrides (dotted keys, YAML scalar or flow-list syntax for the value).
// Every key is checked: an unknown key is an error that suggests the nearest valid one, a wrong type
// names the key, the expected type and where it was found (file:line, or the --set argument).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/lora.h"
#include "core/dtype.h"
#include "kernels/ops.h"

namespace xv {

// Defaults: the reference hyper-parameters of the xVLM2Vec release where they apply.
struct TrainConfig {
  std::string model;  // model folder (Hugging Face layout); required. YAML: `model: DIR`, or `model: {path: DIR, ...}`
  std::string model_weight_dtype = "f32";  // model.weight_dtype: the frozen base's storage, f32 | bf16
  struct Data {
    std::string train;          // an HDF5 corpus (docs/corpus-format.md) or a JSONL of {text_en, text_xx, lang,
                                // image?}; required
    std::string image_root;     // JSONL: folder image paths are relative to; "" = the JSONL's folder
    std::string teacher_cache;  // "corpus" (the corpus's /teacher block), a .npy (xvlm2vec corpus
                                // cache-teacher), or "" = none
    int64_t workers = 2;        // reader threads that tokenize / decode / preprocess ahead of the step
    int64_t prefetch = 256;     // pairs read ahead, at most
    int64_t bucket_window = 0;  // length bucketing over windows of this many pairs; 0 = off
  } data;
  std::string output_dir;  // required
  int64_t seed = 42;
  std::string trainable = "lora";  // lora | full
  struct Lora {
    int64_t r = 8;
    double alpha = 64;
    double dropout = 0.1;
    std::vector<std::string> targets;  // empty = the backbone's default (models/backbones.h)
    std::string init = "kaiming";      // kaiming | gaussian
    bool rslora = false;
  } lora;
  struct Train {
    int64_t epochs = 1;
    int64_t max_steps = 0;  // optimizer steps; 0 = as many as `epochs` passes over the data give
    int64_t batch_size = 8;  // pairs per micro-batch
    int64_t grad_accum = 4;  // micro-batches per optimizer step
    double lr = 1e-5;
    std::string schedule = "cosine";  // cosine | linear | constant
    int64_t warmup_steps = 0;
    double weight_decay = 0.0;
    std::vector<double> betas = {0.9, 0.999};
    double eps = 1e-8;
    double max_grad_norm = 0.3;  // 0 = no clipping
    bool checkpointing = true;   // activation checkpointing
    bool image_prefix_loss = false;
    int64_t threads = 0;  // CPU threads; 0 = the --threads option (default: all cores)
  } train;
  struct Checkpoint {
    int64_t every_steps = 500;  // 0 = only at the end
    int64_t keep = 2;
  } checkpoint;
  struct Log {
    int64_t every_steps = 10;
  } log;
  struct Parallel {  // distributed training (docs/distributed.md); ignored by a single process except `deterministic`
    std::string strategy = "full";   // full | grad_op | none | hybrid
    bool deterministic = false;      // the gradient is the sum of the micro-batches' gradients in global order:
                                     // bit-equal to one process (with grad_accum * ranks) and at any world size
    bool replicate_trainable = false;  // full/hybrid: keep the trainable parameters whole on every rank
    bool prefetch = true;            // gather the next unit while this one computes
    int64_t ranks_per_node = 0;      // hybrid: ranks per shard group; 0 = from the launcher (nodes)
    int64_t vision_layers_per_unit = 8;  // phi3_v: CLIP layers per unit of the frozen base
    double collective_timeout_s = 600;   // a rank not heard from, or a collective not done, for this long ends
                                         // the job naming it (0: wait for ever)
  } parallel;
  struct Export {
    bool adapter = true;  // output_dir/adapter: a PEFT adapter folder
    bool merged = false;  // output_dir/merged: the model with the adapters merged in
  } export_;

  LoraConfig lora_config() const;  // targets must have been resolved
  ops::AdamWParams adamw_config() const;
  DType weight_dtype() const;  // model.weight_dtype as a DType
};

// Parses YAML text; `source` names it in messages (a file path). Applies `overrides` ("key=value") after.
TrainConfig parse_train_config(const std::string& yaml_text, const std::string& source,
                               const std::vector<std::string>& overrides = {});
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The whole config as YAML (every key, resolved values), which parse_train_config reads back unchanged.
std::string train_config_yaml(const TrainConfig& cfg);

// Every valid dotted key, in schema order.
std::vector<std::string> train_config_keys();
// The canonical YAML text of one key's value ("" for an unknown key).
std::string train_config_value(const TrainConfig& cfg, const std::string& key);

// Levenshtein distance (for the "did you mean" of unknown keys).
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace xv
