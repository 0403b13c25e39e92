// How a model is laid out when it is loaded: on which device, in which dtype its frozen weights are stored,
// and whether the weights are read now or later, unit by unit (a sharded run's frozen base).
#pragma once
#include "core/device.h"
#include "core/dtype.h"

namespace xv {

struct LoadOptions {
  Device device = Device::cpu();
  // The frozen base's storage (model.weight_dtype): F32, or BF16 to halve its memory; the CPU widens it to f32
  // per unit (models/unit_store.h) or per op. Trainable tensors (LoRA, full fine-tuning) are always F32.
  DType weight_dtype = DType::F32;
  bool shapes_only = false;  // every weight shape-only (WeightStore::set_shapes_only), read later unit by unit
};

}  // namespace xv
