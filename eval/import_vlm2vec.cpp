#include "eval/import_vlm2vec.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/file_util.h"

namespace xv {

namespace fs = std::filesystem;
using nlohmann::json;

std::string mmeb_family(const std::string& dataset) {
  // MMEB's 36 evaluation datasets by meta-task (VLM2Vec, Table 1), as the released folders name them.
  static const std::map<std::string, std::string> kFamily = {
      {"ImageNet-1K", "classification"},     {"N24News", "classification"},     {"HatefulMemes", "classification"},
      {"VOC2007", "classification"},         {"SUN397", "classification"},      {"Place365", "classification"},
      {"ImageNet-A", "classification"},      {"ImageNet-R", "classification"},  {"ObjectNet", "classification"},
      {"Country211", "classification"},      {"OK-VQA", "vqa"},                 {"A-OKVQA", "vqa"},
      {"DocVQA", "vqa"},                     {"InfographicsVQA", "vqa"},        {"ChartQA", "vqa"},
      {"Visual7W", "vqa"},                   {"ScienceQA", "vqa"},              {"VizWiz", "vqa"},
      {"GQA", "vqa"},                        {"TextVQA", "vqa"},                {"VisDial", "retrieval"},
      {"CIRR", "retrieval"},                 {"VisualNews_t2i", "retrieval"},   {"VisualNews_i2t", "retrieval"},
      {"MSCOCO_t2i", "retrieval"},           {"MSCOCO_i2t", "retrieval"},       {"NIGHTS", "retrieval"},
      {"WebQA", "retrieval"},                {"FashionIQ", "retrieval"},        {"Wiki-SS-NQ", "retrieval"},
      {"OVEN", "retrieval"},                 {"EDIS", "retrieval"},             {"MSCOCO", "grounding"},
      {"RefCOCO", "grounding"},              {"RefCOCO-Matching", "grounding"}, {"Visual7W-Pointing", "grounding"},
  };
  const auto it = kFamily.find(dataset);
  return it == kFamily.end() ? "" : it->second;
}

namespace {

// A language code as the file names give it: two or three lowercase letters.
bool language_code(const std::string& s) {
  return (s.size() == 2 || s.size() == 3) && std::all_of(s.begin(), s.end(), [](char c) { return c >= 'a' && c <= 'z'; });
}

// <dataset>_<lang>.jsonl -> (dataset, lang); the part after the last '_' must be a language code.
void names_from_file(ImportSource& s) {
  const std::string stem = fs::path(s.file).stem().string();
  const size_t cut = stem.rfind('_');
  const std::string tail = cut == std::string::npos ? "" : stem.substr(cut + 1);
  if (s.language.empty()) {
    XV_CHECK(language_code(tail),
             "{}: the file name gives no language (expected <dataset>_<lang>.jsonl, e.g. ImageNet-1K_it.jsonl): "
             "name the language with --lang",
             s.file);
    s.language = tail;
  }
  if (s.dataset.empty()) s.dataset = language_code(tail) && cut > 0 ? stem.substr(0, cut) : stem;
}

// The file's name in the benchmark folder: the dataset and language, with anything but letters, digits, '-', '_'
// and '.' replaced.
std::string task_file(const ImportSource& s) {
  std::string n = s.dataset + "_" + s.language;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return n + ".jsonl";
}

// An image path of the file as the benchmark will hold it: resolved from the image root, checked to be a
// regular file, then relative to the benchmark folder (absolute where no relative path leads there).
std::string image_path(const std::string& p, const fs::path& root, const fs::path& out, const std::string& where,
                       const char* key, const ImportSource& s) {
  const fs::path abs = fs::absolute(fs::path(p).is_absolute() ? fs::path(p) : root / p).lexically_normal();
  std::error_code ec;
  XV_CHECK(fs::is_regular_file(abs, ec), "{}: field '{}': image {} {}{}", where, key, abs.string(),
           fs::exists(abs, ec) ? "is not a regular file" : "does not exist",
           s.image_root.empty() ? " (paths are taken from the file's folder; give the image folder with --image-root)"
                                : "");
  const fs::path rel = abs.lexically_relative(out);
  return rel.empty() ? abs.string() : rel.string();
}

const json& field(const json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  XV_CHECK(it != j.end(), "{}: missing field '{}'", where, key);
  return *it;
}

std::vector<BenchmarkQuery> read_source(const ImportSource& s, const fs::path& out, const std::string& family) {
  require_regular_file(s.file, "released evaluation file");
  std::ifstream f(s.file);
  XV_CHECK(f.good(), "{}: cannot open", s.file);
  const fs::path root = s.image_root.empty() ? fs::absolute(s.file).parent_path() : fs::absolute(s.image_root);
  std::vector<BenchmarkQuery> qs;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = s.file + ":" + std::to_string(n);
    const json j = parse_jsonl_object(line, where);
    BenchmarkQuery q;
    q.line = n;
    q.lang = s.language;
    q.task_type = family;
    const json& text = field(j, "qry_text", where);
    XV_CHECK(text.is_string(), "{}: field 'qry_text' must be a string, found {}", where, text.type_name());
    q.text = text.get<std::string>();
    if (const auto it = j.find("qry_img_path"); it != j.end() && !it->is_null()) {
      XV_CHECK(it->is_string(), "{}: field 'qry_img_path' must be a string (a path) or null, found {}", where,
               it->type_name());
      if (!it->get<std::string>().empty()) q.image = image_path(it->get<std::string>(), root, out, where, "qry_img_path", s);
    }
    XV_CHECK(!q.text.empty() || !q.image.empty(), "{}: field 'qry_text' is empty and there is no 'qry_img_path'", where);
    // tgt_text: the candidates, the gold first.
    const json& tgt = field(j, "tgt_text", where);
    XV_CHECK(tgt.is_array(), "{}: field 'tgt_text' must be a list of strings (the gold first), found {}", where,
             tgt.type_name());
    XV_CHECK(!tgt.empty(), "{}: field 'tgt_text' is an empty list; expected the gold candidate first", where);
    for (size_t c = 0; c < tgt.size(); ++c) {
      XV_CHECK(tgt[c].is_string(), "{}: field 'tgt_text' entry {} must be a string, found {}", where, c,
               tgt[c].type_name());
      q.candidates.push_back(tgt[c].get<std::string>());
    }
    if (const auto it = j.find("tgt_img_path"); it != j.end() && !it->is_null()) {
      XV_CHECK(it->is_array(), "{}: field 'tgt_img_path' must be a list of paths (or null), found {}", where,
               it->type_name());
      XV_CHECK(it->size() == tgt.size(),
               "{}: field 'tgt_img_path' has {} entries, but 'tgt_text' has {}: one per candidate (\"\" or null for none)",
               where, it->size(), tgt.size());
      bool any = false;
      std::vector<std::string> imgs;
      for (size_t c = 0; c < it->size(); ++c) {
        const json& p = (*it)[c];
        XV_CHECK(p.is_null() || p.is_string(), "{}: field 'tgt_img_path' entry {} must be a string or null, found {}",
                 where, c, p.type_name());
        const std::string v = p.is_null() ? "" : p.get<std::string>();
        imgs.push_back(v.empty() ? "" : image_path(v, root, out, where, "tgt_img_path", s));
        any = any || !v.empty();
      }
      if (any) q.candidate_images = std::move(imgs);
    }
    for (size_t c = 0; c < q.candidates.size(); ++c)
      XV_CHECK(!q.candidates[c].empty() || (!q.candidate_images.empty() && !q.candidate_images[c].empty()),
               "{}: field 'tgt_text' entry {} is empty and has no image in 'tgt_img_path'", where, c);
    if (!qs.empty())
      XV_CHECK(q.candidates.size() == qs[0].candidates.size(),
               "{}: field 'tgt_text' has {} candidates, but line {} has {}: every query of a task ranks the same "
               "number of candidates",
               where, q.candidates.size(), qs[0].line, qs[0].candidates.size());
    qs.push_back(std::move(q));
  }
  XV_CHECK(f.eof(), "{}: read error", s.file);
  XV_CHECK(!qs.empty(), "{}: no query lines", s.file);
  return qs;
}

}  // namespace

Benchmark import_vlm2vec(const std::vector<ImportSource>& sources, const ImportOptions& opt) {
  XV_CHECK(!sources.empty(), "eval import: no input file");
  XV_CHECK(!opt.out_dir.empty(), "eval import: no output folder");
  const fs::path out = fs::absolute(opt.out_dir).lexically_normal();
  Benchmark b;
  b.name = opt.name;
  b.created_by = opt.created_by;
  std::set<std::string> files;
  for (ImportSource s : sources) {
    names_from_file(s);
    XV_CHECK(language_code(s.language), "{}: language '{}' is not a language code (two or three lowercase letters)",
             s.file, s.language);
    std::string family = s.family.empty() ? mmeb_family(s.dataset) : s.family;
    XV_CHECK(!family.empty(),
             "{}: dataset '{}' is not one of MMEB's, so its task family is unknown: give it with --family "
             "(classification, vqa, retrieval or grounding)",
             s.file, s.dataset);
    XV_CHECK(std::find(kTaskTypes.begin(), kTaskTypes.end(), family) != kTaskTypes.end(),
             "--family: '{}' is not a task family; expected classification, vqa, retrieval or grounding", family);
    BenchmarkTask t;
    t.name = s.dataset + "/" + s.language;
    t.file = task_file(s);
    XV_CHECK(files.insert(t.file).second, "{}: a second file for dataset '{}' in language '{}'", s.file, s.dataset,
             s.language);
    t.language = s.language;
    t.direction = "xx->xx";
    t.task_type = family;
    t.queries = read_source(s, out, family);
    t.num_queries = int64_t(t.queries.size());
    t.num_candidates = int64_t(t.queries[0].candidates.size());
    b.source += (b.source.empty() ? "" : ", ") + s.file;
    b.tasks.push_back(std::move(t));
  }
  b.source = "released VLM2Vec evaluation files: " + b.source;
  return b;
}

}  // namespace xv
