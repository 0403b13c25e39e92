// Training checkpoints: output_dir/checkpoints/step-N/ holds
//   trainable.safetensors  the trainable tensors, f32, under their saved names (PEFT names for LoRA)
//   manifest.json + optimizer-RRRRR-of-NNNNN.safetensors
//                          the AdamW moments, sharded as the ranks held them (parallel/sharded_checkpoint.h)
//   state.json             step, AdamW step, data position (epoch, index in that epoch's permutation),
//                          the seed (every random draw derives from it and the position), data fingerprint
//   config.yaml            the resolved config the run used
// A checkpoint is written into a staging folder, flushed, then renamed into place: a folder named step-N
// is always complete. Only the newest `keep` are kept.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/checkpoint_dir.h"
#include "core/units.h"

namespace xv {

// state.json's "version": 2 added 'world' and 'grad_accum'.
inline constexpr int64_t kCheckpointStateVersion = 2;

struct TrainState {
  int64_t step = 0;         // optimizer steps done
  int64_t epoch = 0;        // data position: the epoch of the next pair
  int64_t index = 0;        // data position: the next pair's place in that epoch's permutation
  int64_t total_steps = 0;  // the schedule's length
  int64_t num_pairs = 0;
  uint64_t seed = 0;
  std::string data_fingerprint;
  int64_t world = 1;       // ranks of the run that wrote it
  int64_t grad_accum = 0;  // micro-batches per step and rank (0: not recorded)
};

// state.json's text for `st` after `adamw_steps` updates.
std::string checkpoint_state_json(const TrainState& st, int64_t adamw_steps);
TrainState read_checkpoint_state(const std::string& dir);
std::string read_checkpoint_config(const std::string& dir);  // config.yaml's text
// "" when the checkpoint folder is intact (state.json, config.yaml, trainable.safetensors, the optimizer manifest
// and every shard it names read and agree with their formats); otherwise what is wrong with it.
std::string checkpoint_problem(const std::string& dir);
// The newest step-N folder under output_dir/checkpoints that checkpoint_problem finds intact ("" when none), and
// the newer ones it passed over as "path (what is wrong)", newest first (what --resume and export say).
struct IntactCheckpoint {
  std::string dir;
  std::vector<std::string> skipped;
};
IntactCheckpoint newest_intact_checkpoint(const std::string& output_dir);
// Loads a checkpoint's trainable tensors (every one must be present with its shape, and nothing else).
void load_checkpoint(const std::string& dir, const std::vector<TrainableTensor>& trainable);
void load_trainable(const std::string& safetensors_path, const std::vector<TrainableTensor>& trainable);

}  // namespace xv
