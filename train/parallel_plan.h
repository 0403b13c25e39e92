// The ranks' roles for a parallel.strategy (docs/distributed.md): which communicator shards the frozen base,
// which carries the trainable traffic, which shards the optimizer, and for hybrid which reaches the same shard
// on the other nodes. Each is chosen for the model's device (parallel/comm_select.h: MPI for host buffers,
// NCCL for device buffers).
#pragma once
#include <memory>

#include "core/device.h"
#include "parallel/comm.h"
#include "train/train_config.h"

namespace xv {

struct ParallelPlan {
  par::Communicator* world = nullptr;          // every rank (host buffers: terms, barriers)
  std::unique_ptr<par::Communicator> self;     // world of one, when no communicator is given
  std::unique_ptr<par::Communicator> frozen;   // the frozen base's shard group (full: world; hybrid: node)
  std::unique_ptr<par::Communicator> grads;    // trainable traffic, world-wide (its own, for the accounting)
  std::unique_ptr<par::Communicator> group;    // the optimizer's shard group; null = replicated
  std::unique_ptr<par::Communicator> across;   // hybrid: the same shard on the other nodes
};

// Collective over `given` (null: this process alone).
ParallelPlan make_parallel_plan(const TrainConfig& cfg, par::Communicator* given, Device device);

}  // namespace xv
