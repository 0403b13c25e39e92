// Learning-rate schedules with linear warmup, as transformers' get_{constant,linear,cosine}_schedule_with_warmup.
// (AdamW and gradient clipping are ops: kernels/ops.h adamw_update and sum_squares_chunks/scale, driven by
// parallel/fsdp.h's TrainableShards.)
#pragma once
#include <cstdint>
#include <string>

namespace xv {

// lr multiplier at optimizer step `step` (0-based count of updates already made).
// kind: "constant", "linear" or "cosine"; warmup steps ramp linearly from 0.
double lr_lambda(const std::string& kind, int64_t step, int64_t warmup, int64_t total);

}  // namespace xv
