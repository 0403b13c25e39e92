// The checkpoint folders of a run: output_dir/checkpoints/step-N/, each complete once its state.json is in
// place (folders are written under a staging name and renamed, core/atomic_dir.h). What is inside them is
// the trainer's (train/checkpoint.h) and the sharded optimizer's (parallel/sharded_checkpoint.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace xv {

// Every step-N folder under output_dir/checkpoints, complete or not, oldest first (what --resume examines).
std::vector<std::string> list_step_folders(const std::string& output_dir);
// Every complete checkpoint, oldest first.
std::vector<std::string> list_checkpoints(const std::string& output_dir);
// The newest complete checkpoint under output_dir/checkpoints, or "" when there is none.
std::string latest_checkpoint(const std::string& output_dir);
// Removes all but the newest `keep` complete checkpoints.
void prune_checkpoints(const std::string& output_dir, int64_t keep);

}  // namespace xv
