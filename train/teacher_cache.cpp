#include "train/teacher_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/file_util.h"
#include "core/npy.h"
#include "kernels/ops.h"

namespace xv {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The safetensors header of a weight file (its names, dtypes, shapes and offsets): together with the file
// size it identifies the weights without reading gigabytes.
std::string safetensors_header(const std::string& path) {
  require_regular_file(path, "weight file");
  std::ifstream f(path, std::ios::binary);
  XV_CHECK(f.good(), "{}: cannot open weight file", path);
  unsigned char len[8] = {};
  f.read(reinterpret_cast<char*>(len), 8);
  XV_CHECK(f.gcount() == 8, "{}: truncated safetensors file", path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  XV_CHECK(n <= (uint64_t(100) << 20), "{}: safetensors header of {} bytes is implausible", path, n);
  std::string h(static_cast<size_t>(n), '\0');
  f.read(h.data(), std::streamsize(n));
  XV_CHECK(uint64_t(f.gcount()) == n, "{}: truncated safetensors header", path);
  return h;
}

}  // namespace

std::string model_fingerprint(const std::string& dir) {
  const fs::path d(dir);
  require_dir(d, "model folder");
  uint64_t h = fnv1a64(read_file((d / "config.json").string()));
  std::vector<std::string> files;
  const fs::path index = d / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const std::string text = read_file(index.string());
    h = fnv1a64(text, h);
    json j = json::parse(text, nullptr, false);
    XV_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
             "{}: expected an object with a 'weight_map'", index.string());
    std::set<std::string> shards;
    for (const auto& [_, v] : j["weight_map"].items())
      if (v.is_string()) shards.insert(v.get<std::string>());
    files.assign(shards.begin(), shards.end());
  } else {
    files.push_back("model.safetensors");
  }
  for (const auto& name : files) {
    const fs::path p = d / name;
    require_regular_file(p, "weight file");
    h = fnv1a64(name + "\x1f" + std::to_string(fs::file_size(p)) + "\x1f", h);
    h = fnv1a64(safetensors_header(p.string()), h);
  }
  return fingerprint_hex(h);
}

Tensor compute_teacher_embeddings(KdModel& model, const TrainData& data, int64_t batch_size,
                                  const std::function<void(int64_t, int64_t)>& progress) {
  XV_CHECK(batch_size >= 1, "teacher cache: batch size must be >= 1");
  const int64_t N = int64_t(data.pairs.size()), D = model.dim();
  Tensor out({N, D});
  for (int64_t s = 0; s < N; s += batch_size) {
    const int64_t e = std::min(N, s + batch_size);
    std::vector<TrainPair> batch(data.pairs.begin() + s, data.pairs.begin() + e);
    Tensor t;
    try {
      t = model.teacher_embed(batch);
    } catch (const Error& err) {
      fail("{} to {}: {}", data.where(size_t(s)), data.lines[size_t(e - 1)], err.what());
    }
    XV_CHECK(t.numel() == (e - s) * D, "teacher cache: the model returned {} values for {} pairs of dim {}", t.numel(),
             e - s, D);
    ops::copy(t, out.rows(s, e - s));
    if (progress) progress(e, N);
  }
  return out;
}

void write_teacher_cache(const std::string& npy_path, const Tensor& emb, const std::string& model_dir,
                         const TrainData& data) {
  XV_CHECK(emb.ndim() == 2 && emb.dim(0) == int64_t(data.pairs.size()), "teacher cache: {} rows for {} pairs",
           emb.ndim() == 2 ? emb.dim(0) : 0, data.pairs.size());
  json meta = {{"format", "xvlm2vec teacher cache"},
               {"version", 1},
               {"model", model_dir},
               {"model_fingerprint", model_fingerprint(model_dir)},
               {"pairs", data.path},
               {"pairs_fingerprint", data.teacher_fingerprint},
               {"rows", emb.dim(0)},
               {"dim", emb.dim(1)}};
  write_npy(npy_path, emb);
  write_file_atomic(teacher_cache_sidecar(npy_path), meta.dump(1) + "\n");
}

Tensor load_teacher_cache(const std::string& npy_path, const std::string& model_dir, const TrainData& data,
                          int64_t dim) {
  const std::string side = teacher_cache_sidecar(npy_path);
  require_regular_file(npy_path, "the teacher cache (data.teacher_cache)");
  XV_CHECK(fs::is_regular_file(side),
           "{}: the teacher cache has no sidecar {} (it is written by `xvlm2vec corpus cache-teacher`)", npy_path,
           side);
  json meta = json::parse(read_file(side), nullptr, false);
  XV_CHECK(meta.is_object() && meta.value("format", "") == "xvlm2vec teacher cache", "{}: not a teacher cache sidecar",
           side);
  auto field = [&](const char* k) {
    XV_CHECK(meta.contains(k) && meta[k].is_string(), "{}: field '{}' must be a string", side, k);
    return meta[k].get<std::string>();
  };
  const std::string want = model_fingerprint(model_dir), got = field("model_fingerprint");
  XV_CHECK(got == want,
           "{}: the teacher cache was made by another model ({}, {}), not by {} ({}): recompute it with "
           "`xvlm2vec corpus cache-teacher --model {} --pairs {} --out {}`",
           npy_path, meta.value("model", "?"), got, model_dir, want, model_dir, data.path, npy_path);
  XV_CHECK(field("pairs_fingerprint") == data.teacher_fingerprint,
           "{}: the teacher cache was made from other pairs ({}) than {}: the English texts or images differ; "
           "recompute it with `xvlm2vec corpus cache-teacher`",
           npy_path, meta.value("pairs", "?"), data.path);
  Tensor t = read_npy(npy_path);
  XV_CHECK(t.ndim() == 2 && t.dim(0) == int64_t(data.pairs.size()) && t.dim(1) == dim,
           "{}: the teacher cache has shape {}, expected ({}, {}) for {} pairs of the model's dimension", npy_path,
           shape_str(t.shape()), data.pairs.size(), dim, data.pairs.size());
  for (float v : t.to_vector()) XV_CHECK(std::isfinite(v), "{}: the teacher cache holds a non-finite value", npy_path);
  return t;
}

}  // namespace xv
