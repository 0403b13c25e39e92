// Randomly initialised models in the Hugging Face layout (config.json, model.safetensors,
// tokenizer.json, and preprocessor_config.json for phi3_v), for tests and benchmarks.
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace xv {

struct InitModelOptions {
  std::string arch;    // "phi3_v" or "bert"
  std::string preset;  // phi3_v: "tiny" | "phi35v"; bert: "tiny" | "minilm"
  std::string out_dir;
  uint64_t seed = 0;
  DType dtype = DType::F32;      // storage dtype of the weights (F32, BF16, F16)
  std::string tokenizer_json;    // copied into the folder when set; otherwise a small byte-level one is written
  bool progress = false;         // report every 10% of the parameters written (stderr), for large models
  int64_t layers = 0;            // encoder (bert) / decoder (phi3_v) layers; 0: the preset's
};

// Writes the model folder; returns the number of parameters.
int64_t init_model(const InitModelOptions& opt);

}  // namespace xv
