#include "models/backbones.h"

#include "core/error.h"

namespace xv {

const Backbone& backbone(const std::string& model_type) {
  static const std::vector<Backbone> all = {
      {"bert", {"query", "key", "value", "dense"}, false},
      // VLM2Vec: the Phi-3 decoder's fused projections and the CLIP tower's attention.
      {"phi3_v", {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "q_proj", "k_proj", "v_proj", "out_proj"}, true},
  };
  for (const Backbone& b : all)
    if (b.model_type == model_type) return b;
  fail("backbone '{}' is not supported (bert, phi3_v): no default LoRA targets; set lora.targets", model_type);
}

}  // namespace xv
