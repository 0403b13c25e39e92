// The self-knowledge-distillation training loop (`xvlm2vec train`), one process:
//
//   for each optimizer step:
//     grad_accum micro-batches of batch_size pairs, read in the order of a permutation per epoch derived
//     from (seed, epoch); each forward_backward with loss_scale 1/grad_accum and a LoRA dropout seed from
//     (seed, step, micro-batch); the teacher targets from the teacher cache when there is one
//     clip the global gradient norm (max_grad_norm), lr = train.lr * lr_lambda(schedule, step), AdamW
//     log (output_dir/metrics.jsonl and the terminal), checkpoint every checkpoint.every_steps
//   at the end: a checkpoint, then output_dir/adapter and/or output_dir/merged per export.*
//
// The pairs form one stream across epochs (a micro-batch may span the end of an epoch); with max_steps 0
// the run lasts floor(epochs * pairs / (batch_size * grad_accum)) steps. A non-finite loss term or gradient
// norm stops the run with an error naming the step and the term; the last checkpoint stays as it was.
// --resume restarts from the newest checkpoint and continues bit-identically.
#pragma once
#include <cstdint>
#include <string>

#include "models/kd/kd_model.h"
#include "train/train_config.h"

namespace xv::par {
class Communicator;
}

namespace xv {

struct TrainOptions {
  bool resume = false;     // continue from the newest checkpoint of output_dir (start fresh when there is none)
  bool quiet = false;      // nothing on the terminal (metrics.jsonl is still written)
  int64_t stop_after = 0;  // stop after this many steps of this run, as if killed (tests); 0 = run to the end
  par::Communicator* world = nullptr;  // the ranks training together (parallel/comm.h); null = this process alone
};

struct TrainSummary {
  int64_t start_step = 0;   // 0, or the step resumed from
  int64_t steps = 0;        // optimizer steps done in total
  int64_t total_steps = 0;  // the schedule's length
  bool finished = false;    // reached total_steps (and exported)
  std::string last_checkpoint;
  KdLossTerms last;  // the last step's terms (mean over its micro-batches)
};

TrainSummary train(const TrainConfig& cfg, const TrainOptions& opt = {});

// cfg with what the config leaves to the model filled in (lora.targets from the backbone) and the paths
// made absolute; reads model/config.json.
TrainConfig resolve_train_config(const TrainConfig& cfg);

}  // namespace xv
