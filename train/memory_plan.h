// The training run's memory, per rank, made before the first step: what the model and the optimizer hold once
// loaded and sharded (measured: core/storage.h), and what a step will add on top (estimated: the units
// gathered whole at once, one micro-batch's activations, the optimizer step's buffers). Printed at start, and
// checked against what the process can still have (core/resources.h), so that a run that cannot fit stops
// with the setting that would make it fit instead of being killed mid-step.
#pragma once
#include <cstdint>
#include <string>

#include "core/resources.h"
#include "models/kd/kd_model.h"

namespace xv {

struct MemoryPlan {
  std::string device = "cpu";
  // Held once the model is loaded and sharded (bytes of live tensors on the device).
  uint64_t held = 0;
  uint64_t frozen = 0;     // the frozen base this rank keeps (its shards, or all of it)
  uint64_t trainable = 0;  // trainable values, their gradients and this rank's AdamW moments
  // Added by a step (estimates).
  uint64_t gathered = 0;     // frozen units held whole at once (sharded base, or widened from bf16)
  uint64_t activations = 0;  // one micro-batch (KdModel::activation_bytes of `shape`)
  uint64_t step = 0;         // the optimizer step's flat buffers
  ActivationShape shape;

  uint64_t added() const { return gathered + activations + step; }
  uint64_t total() const { return held + added(); }
};

// "memory plan (cpu, per rank): held 812 MB (frozen base 790 MB, trainable state 12 MB, other 10 MB); a step
// adds about 96 MB (activations 80 MB for 8 pairs x 64 tokens, checkpointing; gathered units 16 MB; optimizer
// 1 MB); total about 908 MB" — one line.
std::string format_memory_plan(const MemoryPlan& p);

// The settings that change the plan, for the advice of the error below.
struct MemoryPlanSettings {
  int64_t batch_size = 0;
  bool checkpointing = true;
  bool bf16_weights = false;
  bool sharded = false;  // the frozen base is sharded over more than one rank
};

// Throws an xv::Error when what a step adds does not fit in `budget` (what the process can still allocate, with
// a 5% margin): the message gives the plan, the largest part and what would make it fit (the largest
// train.batch_size that fits, train.checkpointing: true, model.weight_dtype: bf16, more ranks).
void check_memory_plan(const MemoryPlan& p, const MemoryBudget& budget, const MemoryPlanSettings& s);

}  // namespace xv
