// Checkpoints written and read by every rank together (core/checkpoint_dir.h for the folders):
//   trainable.safetensors   rank 0: the whole trainable tensors (every rank holds them whole between steps)
//   optimizer-RRRRR-of-NNNNN.safetensors
//                           one per distinct range of the flat trainable buffer that some rank owns (the first
//                           rank owning it writes it): "exp_avg" and "exp_avg_sq", 1-D f32, its elements
//                           [begin, end) of the flat layout
//   manifest.json           the flat layout (every tensor's name, shape and offset; total and padded sizes),
//                           the world it was written by and every shard file with its [begin, end)
//   state.json, config.yaml rank 0: the files the caller (the trainer) hands over, state.json last
// The files go into one staging folder that rank 0 renames into place once every rank has written and flushed
// its part: a step-N folder is complete or absent. Loading reads, for the range this rank owns now, the
// overlapping parts of whatever shards were written, so a checkpoint loads at any world size (re-sharding).
#pragma once
#include <string>

#include <map>

#include "core/units.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"

namespace xv::par {

// Collective over `world`. Returns the checkpoint's path.
// output_dir/checkpoints/step-<step>/ with the trainable tensors, the optimizer shards, the manifest and
// `files` (name -> text: the trainer's state.json and config.yaml), then all but the newest `keep` pruned.
std::string save_sharded_checkpoint(Communicator& world, const std::string& output_dir, int64_t step,
                                    TrainableShards& ts, const std::map<std::string, std::string>& files,
                                    int64_t keep);
// Loads the AdamW moments and step count for the elements `ts` owns (the parameters come from
// trainable.safetensors, read before `ts` is made). Checks the layout against `ts`.
void load_sharded_optimizer(const std::string& dir, TrainableShards& ts);

}  // namespace xv::par
