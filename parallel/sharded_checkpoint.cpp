#include "parallel/sharded_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_dir.h"
#include "core/checkpoint_dir.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "kernels/ops.h"

namespace xv::par {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string shard_name(int64_t i, int64_t n) { return fmt::format("optimizer-{:05}-of-{:05}.safetensors", i, n); }

// The staging folder's path from rank 0 to everyone.
std::string share_string(Communicator& c, std::string s) {
  int64_t n = int64_t(s.size());
  c.broadcast(&n, 1, DType::I64, 0);
  s.resize(size_t(n));
  if (n > 0) c.broadcast(s.data(), size_t(n), DType::U8, 0);
  return s;
}

}  // namespace

std::string save_sharded_checkpoint(Communicator& world, const std::string& output_dir, int64_t step,
                                    TrainableShards& ts, const std::map<std::string, std::string>& files,
                                    int64_t keep) {
  const fs::path root = fs::path(output_dir) / "checkpoints";
  const std::string dst = (root / ("step-" + std::to_string(step))).string();
  const int64_t W = world.size(), r = world.rank();
  // Who writes which range: the first rank owning each distinct range.
  int64_t mine[2] = {ts.own_begin(), ts.own_end()};
  std::vector<int64_t> ranges(size_t(2 * W));
  world.all_gather(mine, ranges.data(), 2, DType::I64);
  std::vector<int64_t> writers;  // ranks, in rank order
  for (int64_t k = 0; k < W; ++k) {
    bool first = true;
    for (int64_t q = 0; q < k; ++q)
      first = first && !(ranges[size_t(2 * q)] == ranges[size_t(2 * k)] && ranges[size_t(2 * q + 1)] == ranges[size_t(2 * k + 1)]);
    if (first) writers.push_back(k);
  }
  std::unique_ptr<StagingDir> stage;
  std::string path;
  if (r == 0) stage = std::make_unique<StagingDir>(dst), path = stage->path();
  path = share_string(world, path);
  const auto me = std::find(writers.begin(), writers.end(), r);
  if (me != writers.end()) {
    write_safetensors((fs::path(path) / shard_name(me - writers.begin(), int64_t(writers.size()))).string(),
                      {{"exp_avg", &ts.exp_avg()}, {"exp_avg_sq", &ts.exp_avg_sq()}}, xv::DType::F32,
                      {{"begin", std::to_string(ts.own_begin())}, {"end", std::to_string(ts.own_end())}});
  }
  world.barrier();  // every shard is written and flushed
  if (r == 0) {
    json man = {{"format", "xvlm2vec sharded optimizer"}, {"version", 1}, {"world", W}, {"adamw_step", ts.adamw_steps()}};
    man["flat"] = {{"size", ts.size()}, {"padded", ts.padded()}};
    json tensors = json::array();
    const auto& off = ts.offsets();
    for (size_t i = 0; i < ts.tensors().size(); ++i)
      tensors.push_back({{"name", ts.tensors()[i].name}, {"shape", ts.tensors()[i].value->shape()}, {"offset", off[i]}});
    man["tensors"] = tensors;
    json shards = json::array();
    for (size_t i = 0; i < writers.size(); ++i)
      shards.push_back({{"file", shard_name(int64_t(i), int64_t(writers.size()))},
                        {"rank", writers[i]},
                        {"begin", ranges[size_t(2 * writers[i])]},
                        {"end", ranges[size_t(2 * writers[i] + 1)]}});
    man["shards"] = shards;
    std::vector<NamedTensor> values;
    for (const auto& t : ts.tensors()) values.push_back({t.name, t.value});
    write_safetensors(stage->file("trainable.safetensors"), values, xv::DType::F32, {{"format", "pt"}});
    write_file_atomic(stage->file("manifest.json"), man.dump(1) + "\n");
    // state.json last: a folder with it is a complete checkpoint (core/checkpoint_dir.h).
    for (const auto& [name, text] : files)
      if (name != "state.json") write_file_atomic(stage->file(name), text);
    if (files.count("state.json")) write_file_atomic(stage->file("state.json"), files.at("state.json"));
    stage->commit();
    prune_checkpoints(output_dir, keep);
  }
  world.barrier();  // the folder is in place before anyone goes on (or reads it)
  return dst;
}

void load_sharded_optimizer(const std::string& dir, TrainableShards& ts) {
  const std::string mfile = (fs::path(dir) / "manifest.json").string();
  XV_CHECK(fs::is_regular_file(mfile), "{}: no manifest.json (not a checkpoint of this version)", dir);
  const json man = json::parse(read_file(mfile), nullptr, false);
  XV_CHECK(man.is_object() && man.value("format", "") == "xvlm2vec sharded optimizer" && man.contains("flat") &&
               man.contains("tensors") && man.contains("shards") && man["shards"].is_array() &&
               man["tensors"].is_array(),
           "{}: not a sharded optimizer manifest", mfile);
  XV_CHECK(man["flat"].value("size", int64_t(-1)) == ts.size(), "{}: the trainable tensors hold {} elements, the model {}",
           mfile, man["flat"].value("size", int64_t(-1)), ts.size());
  const auto& off = ts.offsets();
  XV_CHECK(man["tensors"].size() == ts.tensors().size(), "{}: {} trainable tensors, the model has {}", mfile,
           man["tensors"].size(), ts.tensors().size());
  for (size_t i = 0; i < ts.tensors().size(); ++i) {
    const json& t = man["tensors"][i];
    XV_CHECK(t.value("name", "") == ts.tensors()[i].name && t.value("offset", int64_t(-1)) == off[i],
             "{}: tensor {} is '{}' at {}, the model has '{}' at {}", mfile, i, t.value("name", ""),
             t.value("offset", int64_t(-1)), ts.tensors()[i].name, off[i]);
  }
  // This rank's elements [b, e) of the flat layout, from the shards that overlap them (beyond `size`: padding,
  // whose moments stay zero).
  const int64_t b = ts.own_begin(), e = std::min(ts.own_end(), ts.size());
  ops::fill(ts.exp_avg(), 0.0f);
  ops::fill(ts.exp_avg_sq(), 0.0f);
  int64_t covered = 0;
  for (const json& sh : man["shards"]) {
    const int64_t sb = sh.value("begin", int64_t(-1)), se = sh.value("end", int64_t(-1));
    const std::string file = (fs::path(dir) / sh.value("file", "")).string();
    XV_CHECK(sb >= 0 && se >= sb, "{}: shard {} has range [{}, {})", mfile, file, sb, se);
    const int64_t lo = std::max(b, sb), hi = std::min(e, se);
    if (lo >= hi) continue;
    const WeightStore ws = WeightStore::open_file(file);
    const Tensor m = ws.get("exp_avg", {se - sb}).to(ts.exp_avg().device());
    const Tensor v = ws.get("exp_avg_sq", {se - sb}).to(ts.exp_avg_sq().device());
    ops::copy(m.flat().col_range(lo - sb, hi - lo), ts.exp_avg().flat().col_range(lo - b, hi - lo));
    ops::copy(v.flat().col_range(lo - sb, hi - lo), ts.exp_avg_sq().flat().col_range(lo - b, hi - lo));
    covered += hi - lo;
  }
  XV_CHECK(covered == std::max<int64_t>(0, e - b), "{}: the shards cover {} of the {} elements [{}, {}) this rank needs",
           mfile, covered, e - b, b, e);
  // The AdamW update count: in the manifest (and, as checkpoints before it had it, in state.json).
  int64_t t = -1;
  if (man.contains("adamw_step") && man["adamw_step"].is_number_integer()) {
    t = man["adamw_step"].get<int64_t>();
  } else {
    const std::string sfile = (fs::path(dir) / "state.json").string();
    const json st = json::parse(read_file(sfile), nullptr, false);
    XV_CHECK(st.is_object() && st.contains("adamw_step") && st["adamw_step"].is_number_integer(),
             "{}: field 'adamw_step' must be an integer", sfile);
    t = st["adamw_step"].get<int64_t>();
  }
  XV_CHECK(t >= 0, "{}: field 'adamw_step' must be >= 0, found {}", mfile, t);
  ts.set_adamw_steps(t);
}

}  // namespace xv::par
