#include "core/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_dir.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/safetensors.h"

namespace xv {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// N of a folder named step-N, or -1.
int64_t step_of(const fs::path& p) {
  const std::string n = p.filename().string();
  if (n.rfind("step-", 0) != 0 || n.size() == 5 || n.find_first_not_of("0123456789", 5) != std::string::npos) return -1;
  return std::stoll(n.substr(5));
}

int64_t get_int(const json& j, const char* key, const std::string& file) {
  XV_CHECK(j.contains(key) && j[key].is_number_integer(), "{}: field '{}' must be an integer", file, key);
  return j[key].get<int64_t>();
}

}  // namespace

std::vector<std::string> list_checkpoints(const std::string& output_dir) {
  const fs::path root = fs::path(output_dir) / "checkpoints";
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return {};
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const int64_t s = step_of(e.path());
    if (s >= 0 && fs::is_regular_file(e.path() / "state.json")) found.emplace_back(s, e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [_, p] : found) out.push_back(p);
  return out;
}

std::string latest_checkpoint(const std::string& output_dir) {
  auto all = list_checkpoints(output_dir);
  return all.empty() ? "" : all.back();
}

std::string checkpoint_state_json(const TrainState& st, int64_t adamw_steps) {
  json s = {{"format", "xvlm2vec checkpoint"},
            {"version", 2},
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

void prune_checkpoints(const std::string& output_dir, int64_t keep) {
  auto all = list_checkpoints(output_dir);
  for (size_t i = 0; i + size_t(std::max<int64_t>(1, keep)) < all.size(); ++i) {
    std::error_code ec;
    fs::remove_all(all[i], ec);
  }
}

TrainState read_checkpoint_state(const std::string& dir) {
  const std::string file = (fs::path(dir) / "state.json").string();
  XV_CHECK(fs::is_regular_file(file), "{}: not a checkpoint folder (no state.json)", dir);
  json j = json::parse(read_file(file), nullptr, false);
  XV_CHECK(j.is_object() && j.value("format", "") == "xvlm2vec checkpoint", "{}: not a checkpoint state file", file);
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
  return st;
}

std::string read_checkpoint_config(const std::string& dir) { return read_file((fs::path(dir) / "config.yaml").string()); }

void load_trainable(const std::string& path, const std::vector<TrainableTensor>& trainable) {
  auto ws = WeightStore::open_file(path);
  for (const auto& t : trainable) {
    XV_CHECK(ws.has(t.name), "{}: tensor '{}' is missing", path, t.name);
    *t.value = ws.get(t.name, t.value->shape);
  }
  XV_CHECK(ws.names().size() == trainable.size(), "{}: holds {} tensors, the model has {} trainable ones", path,
           ws.names().size(), trainable.size());
}

void load_checkpoint(const std::string& dir, const std::vector<TrainableTensor>& trainable) {
  load_trainable((fs::path(dir) / "trainable.safetensors").string(), trainable);
}

int64_t read_checkpoint_adamw_steps(const std::string& dir) {
  const std::string sfile = (fs::path(dir) / "state.json").string();
  const int64_t t = get_int(json::parse(read_file(sfile), nullptr, false), "adamw_step", sfile);
  XV_CHECK(t >= 0, "{}: field 'adamw_step' must be >= 0, found {}", sfile, t);
  return t;
}

}  // namespace xv
