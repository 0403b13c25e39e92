// What the project knows of each backbone, by config.json's model_type, in one place: callers ask the
// backbone (or the loaded model, KdModel) instead of branching on its name.
#pragma once
#include <string>
#include <vector>

namespace xv {

struct Backbone {
  std::string model_type;                        // "bert", "phi3_v"
  std::vector<std::string> default_lora_targets;  // PEFT target_modules when the config gives none
  bool images = false;                           // has an image path
};

// Throws naming the supported model types.
const Backbone& backbone(const std::string& model_type);
inline std::vector<std::string> default_lora_targets(const std::string& model_type) {
  return backbone(model_type).default_lora_targets;
}

}  // namespace xv
