#include "train/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_dir.h"
#include "core/checkpoint_dir.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "train/train_config.h"

namespace xv {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

int64_t get_int(const json& j, const char* key, const std::string& file) {
  XV_CHECK(j.contains(key) && j[key].is_number_integer(), "{}: field '{}' must be an integer", file, key);
  return j[key].get<int64_t>();
}

}  // namespace

std::string checkpoint_state_json(const TrainState& st, int64_t adamw_steps) {
  json s = {{"format", "xvlm2vec checkpoint"},
            {"version", kCheckpointStateVersion},
            {"step", st.step},
            {"adamw_step", adamw_steps},
            {"epoch", st.epoch},
            {"index", st.index},
            {"total_steps", st.total_steps},
            {"num_pairs", st.num_pairs},
            {"world", st.world},
            {"grad_accum", st.grad_accum},
            {"data_fingerprint", st.data_fingerprint},
            // No generator state to save: every draw is a function of the seed and the position.
            {"rng", {{"seed", st.seed},
                     {"permutation", "splitmix64 Fisher-Yates of (seed, epoch)"},
                     {"dropout", "splitmix64 of (seed, step, global micro-batch)"}}}};
  return s.dump(1) + "\n";
}

TrainState read_checkpoint_state(const std::string& dir) {
  const std::string file = (fs::path(dir) / "state.json").string();
  XV_CHECK(fs::is_regular_file(file), "{}: not a checkpoint folder (no state.json)", dir);
  json j = json::parse(read_file(file), nullptr, false);
  XV_CHECK(j.is_object() && j.value("format", "") == "xvlm2vec checkpoint", "{}: not a checkpoint state file", file);
  // Version 1 had no 'world' and 'grad_accum' (read as 1 rank, the config's grad_accum); 2 is written now.
  const int64_t version = get_int(j, "version", file);
  XV_CHECK(version >= 1 && version <= kCheckpointStateVersion,
           "{}: field 'version' is {}; this build reads checkpoint versions 1 to {} (written by a newer xvlm2vec?)",
           file, version, kCheckpointStateVersion);
  TrainState st;
  st.step = get_int(j, "step", file);
  st.epoch = get_int(j, "epoch", file);
  st.index = get_int(j, "index", file);
  st.total_steps = get_int(j, "total_steps", file);
  st.num_pairs = get_int(j, "num_pairs", file);
  if (j.contains("world")) st.world = get_int(j, "world", file);
  if (j.contains("grad_accum")) st.grad_accum = get_int(j, "grad_accum", file);
  XV_CHECK(st.world >= 1 && st.grad_accum >= 0, "{}: fields 'world' and 'grad_accum' must be >= 1 and >= 0", file);
  XV_CHECK(j.contains("rng") && j["rng"].is_object() && j["rng"].contains("seed") &&
               j["rng"]["seed"].is_number_unsigned(),
           "{}: field 'rng.seed' must be a non-negative integer", file);
  st.seed = j["rng"]["seed"].get<uint64_t>();
  XV_CHECK(j.contains("data_fingerprint") && j["data_fingerprint"].is_string(), "{}: field 'data_fingerprint' must be a string",
           file);
  st.data_fingerprint = j["data_fingerprint"].get<std::string>();
  XV_CHECK(st.step >= 0 && st.epoch >= 0 && st.index >= 0 && st.index <= st.num_pairs,
           "{}: inconsistent data position (epoch {}, index {} of {})", file, st.epoch, st.index, st.num_pairs);
  XV_CHECK(st.total_steps >= 1 && st.step <= st.total_steps,
           "{}: field 'step' is {}, past the run's {} steps (field 'total_steps')", file, st.step, st.total_steps);
  return st;
}

std::string read_checkpoint_config(const std::string& dir) { return read_file((fs::path(dir) / "config.yaml").string()); }

std::string checkpoint_problem(const std::string& dir) {
  try {
    read_checkpoint_state(dir);
    const std::string cfg = (fs::path(dir) / "config.yaml").string();
    require_regular_file(cfg, "the checkpoint's config");
    parse_train_config(read_file(cfg), cfg);
    WeightStore::open_file((fs::path(dir) / "trainable.safetensors").string());
    const std::string mfile = (fs::path(dir) / "manifest.json").string();
    require_regular_file(mfile, "the optimizer manifest");
    const json man = json::parse(read_file(mfile), nullptr, false);
    XV_CHECK(man.is_object() && man.contains("shards") && man["shards"].is_array() && !man["shards"].empty(),
             "{}: not a sharded optimizer manifest", mfile);
    for (const json& sh : man["shards"]) {
      XV_CHECK(sh.is_object() && sh.contains("file") && sh["file"].is_string(), "{}: a shard without a file name",
               mfile);
      WeightStore::open_file((fs::path(dir) / sh["file"].get<std::string>()).string());
    }
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

IntactCheckpoint newest_intact_checkpoint(const std::string& output_dir) {
  IntactCheckpoint r;
  const auto all = list_step_folders(output_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const std::string why = checkpoint_problem(*it);
    if (why.empty()) {
      r.dir = *it;
      break;
    }
    r.skipped.push_back(fmt::format("{} ({})", *it, why));
  }
  return r;
}

void load_trainable(const std::string& path, const std::vector<TrainableTensor>& trainable) {
  auto ws = WeightStore::open_file(path);
  for (const auto& t : trainable) {
    XV_CHECK(ws.has(t.name), "{}: tensor '{}' is missing", path, t.name);
    *t.value = ws.get(t.name, t.value->shape()).to(t.value->device());
  }
  XV_CHECK(ws.names().size() == trainable.size(), "{}: holds {} tensors, the model has {} trainable ones", path,
           ws.names().size(), trainable.size());
}

void load_checkpoint(const std::string& dir, const std::vector<TrainableTensor>& trainable) {
  load_trainable((fs::path(dir) / "trainable.safetensors").string(), trainable);
}

}  // namespace xv
