#include "data/train_data.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"

namespace xv {

namespace fs = std::filesystem;

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

namespace {

std::string text_field(const nlohmann::json& j, const char* name, const std::string& where) {
  XV_CHECK(j.contains(name), "{}: missing field '{}' (a non-empty string)", where, name);
  XV_CHECK(j[name].is_string(), "{}: field '{}' must be a string, found {}", where, name, j[name].type_name());
  std::string s = j[name].get<std::string>();
  XV_CHECK(s.find_first_not_of(" \t\r\n") != std::string::npos, "{}: field '{}' is empty", where, name);
  return s;
}

}  // namespace

uint64_t fnv1a64(std::string_view bytes, uint64_t h) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string fingerprint_hex(uint64_t h) { return fmt::format("fnv1a64:{:016x}", h); }

TrainData read_train_data(const std::string& path, const std::string& image_root) {
  require_regular_file(path, "the training pairs file (data.train)");
  std::ifstream f(path, std::ios::binary);
  XV_CHECK(f.good(), "{}: cannot open the training pairs file (data.train)", path);
  const fs::path root = image_root.empty() ? fs::path(path).parent_path() : fs::path(image_root);
  TrainData d;
  d.path = path;
  uint64_t h_all = fnv1a64(""), h_teacher = fnv1a64("");
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", where, e.what());
    }
    XV_CHECK(j.is_object(), "{}: each line must be a JSON object with text_en, text_xx, lang", where);
    TrainPair p;
    p.text_en = text_field(j, "text_en", where);
    p.text_xx = text_field(j, "text_xx", where);
    if (j.contains("lang") && !j["lang"].is_null()) {
      XV_CHECK(j["lang"].is_string(), "{}: field 'lang' must be a string, found {}", where, j["lang"].type_name());
      p.lang = j["lang"].get<std::string>();
    }
    std::string image_field;
    if (j.contains("image") && !j["image"].is_null()) {
      XV_CHECK(j["image"].is_string(), "{}: field 'image' must be a string (a path), found {}", where,
               j["image"].type_name());
      image_field = j["image"].get<std::string>();
      XV_CHECK(!image_field.empty(), "{}: field 'image' is empty (leave it out or null for a text-only pair)", where);
      const fs::path ip(image_field);
      p.image = (ip.is_absolute() ? ip : root / ip).string();
      const std::string k = path_kind(p.image);
      XV_CHECK(k == "is a regular file", "{}: field 'image': {} {}", where, p.image,
               k.rfind("is a", 0) == 0 ? k + ", an image file was expected" : k);
    }
    for (const std::string* s : {&p.text_en, &p.text_xx, &p.lang, &image_field}) {
      h_all = fnv1a64(*s, h_all);
      h_all = fnv1a64(std::string_view("\x1f", 1), h_all);
    }
    h_teacher = fnv1a64(p.text_en, h_teacher);
    h_teacher = fnv1a64(std::string_view("\x1f", 1), h_teacher);
    h_teacher = fnv1a64(image_field, h_teacher);
    h_teacher = fnv1a64(std::string_view("\x1e", 1), h_teacher);
    d.pairs.push_back(std::move(p));
    d.lines.push_back(n);
  }
  XV_CHECK(!f.bad(), "{}: read failed", path);
  XV_CHECK(!d.pairs.empty(), "{}: no training pairs (expected one JSON object per line)", path);
  d.fingerprint = fingerprint_hex(h_all);
  d.teacher_fingerprint = fingerprint_hex(h_teacher);
  return d;
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  uint64_t s = seed ^ (0xa0761d6478bd642full * uint64_t(epoch + 1));
  splitmix64(s);
  for (int64_t i = n - 1; i > 0; --i) {
    // A 64-bit draw modulo i + 1: the bias (< n / 2^64) is immaterial, and it is the same everywhere.
    const uint64_t j = splitmix64(s) % uint64_t(i + 1);
    std::swap(p[size_t(i)], p[size_t(j)]);
  }
  return p;
}

uint64_t micro_batch_seed(uint64_t seed, int64_t step, int64_t micro) {
  uint64_t s = seed * 0xd1b54a32d192ed03ull + uint64_t(step) * 0x8cb92ba72f3d8dd7ull + uint64_t(micro);
  const uint64_t z = splitmix64(s);
  return z ? z : 1;
}

}  // namespace xv
