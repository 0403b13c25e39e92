// The frozen base weights of a model, grouped into units (the embeddings, each layer, ...) that a sharding
// wrapper outside the model (parallel/fsdp.h) may hold elsewhere between uses. The model brackets every use
// of a unit's tensors with UnitAccess::acquire / release and says which unit it will use next, so the wrapper
// can fetch that one while this one computes. Without a UnitAccess the tensors simply stay where they are.
//
// Between release(u) and the next acquire(u) the wrapper may release the unit's tensors (Tensor::release:
// their layouts stay) or swap them for copies in another dtype: the frozen base may be stored in bf16 and
// widened to f32 for the unit in use on the CPU (models/unit_store.h, parallel/fsdp.h). Within an acquire, the
// tensors are whole and on the model's device.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace xv {

struct WeightUnit {
  std::string name;              // "embeddings", "layer.3" (bert); "clip.0-7", "projector", "decoder.5" (phi3_v)
  std::vector<Tensor*> tensors;  // in a fixed order (the unit's flat layout)
  // Set when the tensors are shape-only (KdModel::load with LoadOptions::shapes_only): fills them, whole, from the
  // checkpoint. The sharding wrapper calls it once per unit, keeps its shard and empties them again, so the
  // whole base is never held at once.
  std::function<void()> load{};
};

// A trainable tensor and its gradient, as the model lists them (KdModel::trainable) for the optimizer and
// its sharding (parallel/fsdp.h).
struct TrainableTensor {
  std::string name;  // as saved: PEFT adapter names for LoRA, Hugging Face names for full fine-tuning
  Tensor* value;
  Tensor* grad;
};

class UnitAccess {
 public:
  virtual ~UnitAccess() = default;
  // Before the model reads unit `u`; `next` is the unit it will read after this one (-1: none), to prefetch.
  virtual void acquire(int u, int next) = 0;
  // The model is done with unit `u` until it acquires it again.
  virtual void release(int u) = 0;
};

// How a model groups its weights into units.
struct UnitOptions {
  int64_t vision_layers_per_unit = 8;  // phi3_v: CLIP layers per unit (the first also holds the embeddings)
};

// Brackets in model code: no-ops without a UnitAccess.
inline void unit_acquire(UnitAccess* a, int u, int next) {
  if (a) a->acquire(u, next);
}
inline void unit_release(UnitAccess* a, int u) {
  if (a) a->release(u);
}

class WeightStore;

// A WeightUnit::load: tensor i becomes the concatenation, flattened and in order, of the checkpoint tensors
// sources[i] (one name, or e.g. q/k/v fused), in its dtype (converted from the file's) and on its device; each
// source's file pages are released after.
std::function<void()> checkpoint_loader(std::shared_ptr<const WeightStore> ws, std::vector<Tensor*> tensors,
                                        std::vector<std::vector<std::string>> sources);

}  // namespace xv
