// Benchmark folder reader and writer (docs/benchmark-format.md). The JSON-level checks (is it an object,
// is the field a string) happen while parsing, where the line is known; the checks of meaning (counts agree
// with the manifest, the language and task type match, texts are non-empty) are shared by the reader and
// the writer, so a benchmark that writes also reads back.
#include "eval/benchmark.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/file_util.h"

namespace xv {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool one_of(const std::string& s, const std::vector<std::string>& set) {
  return std::find(set.begin(), set.end(), s) != set.end();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

// ---- JSON field access with messages naming `where` (file or file:line) and the field ----

const json& field(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  XV_CHECK(it != obj.end(), "{}: missing field '{}'", where, key);
  return *it;
}

std::string get_string(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  XV_CHECK(v.is_string(), "{}: field '{}' must be a string, found {}", where, key, v.type_name());
  return v.get<std::string>();
}

int64_t get_int(const json& obj, const char* key, const std::string& where, int64_t min) {
  const json& v = field(obj, key, where);
  XV_CHECK(v.is_number_integer(), "{}: field '{}' must be an integer, found {}", where, key, v.type_name());
  const int64_t x = v.get<int64_t>();
  XV_CHECK(x >= min, "{}: field '{}' must be at least {}, found {}", where, key, min, x);
  return x;
}

// An optional path: absent or null means none.
std::string get_optional_path(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return "";
  XV_CHECK(it->is_string(), "{}: field '{}' must be a string (a path) or null, found {}", where, key,
           it->type_name());
  return it->get<std::string>();
}

}  // namespace

nlohmann::json parse_jsonl_object(const std::string& line, const std::string& where) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", where, e.what());
  }
  XV_CHECK(j.is_object(), "{}: each line must be a JSON object, found {}", where, j.type_name());
  return j;
}

namespace {

// A file name inside the benchmark folder: relative, no "..", so a benchmark cannot point outside itself.
void check_inner_file(const std::string& file, const std::string& where, const char* key) {
  XV_CHECK(!file.empty(), "{}: field '{}' is empty; expected a file name inside the benchmark folder", where, key);
  const fs::path p(file);
  bool up = false;
  for (const auto& part : p) up = up || part == "..";
  XV_CHECK(!p.is_absolute() && !up, "{}: field '{}' is '{}'; expected a relative path inside the benchmark folder",
           where, key, file);
}

// ---- Checks of meaning, shared by reader and writer ----

void check_query(const BenchmarkTask& t, const BenchmarkQuery& q, const std::string& where, const std::string& dir) {
  XV_CHECK(!q.text.empty() || !q.image.empty(), "{}: field 'qry_text' is empty and there is no 'qry_img_path'",
           where);
  XV_CHECK(!q.candidates.empty(), "{}: field 'tgt_text' is an empty list; expected the gold candidate first", where);
  XV_CHECK(int64_t(q.candidates.size()) == t.num_candidates,
           "{}: field 'tgt_text' has {} candidates, but the manifest gives task '{}' num_candidates {}", where,
           q.candidates.size(), t.name, t.num_candidates);
  XV_CHECK(q.candidate_images.empty() || q.candidate_images.size() == q.candidates.size(),
           "{}: field 'tgt_img_path' has {} entries, but 'tgt_text' has {}", where, q.candidate_images.size(),
           q.candidates.size());
  for (size_t c = 0; c < q.candidates.size(); ++c) {
    const bool has_image = c < q.candidate_images.size() && !q.candidate_images[c].empty();
    XV_CHECK(!q.candidates[c].empty() || has_image, "{}: field 'tgt_text' entry {} is empty and has no image", where,
             c);
  }
  XV_CHECK(q.lang == t.language, "{}: field 'lang' is '{}', but the manifest gives task '{}' language '{}'", where,
           q.lang, t.name, t.language);
  XV_CHECK(one_of(q.task_type, kTaskTypes), "{}: field 'task_type' is '{}'; expected one of {}", where, q.task_type,
           join(kTaskTypes));
  XV_CHECK(q.task_type == t.task_type, "{}: field 'task_type' is '{}', but the manifest gives task '{}' type '{}'",
           where, q.task_type, t.name, t.task_type);
  if (dir.empty()) return;
  auto exists = [&](const std::string& img, const char* key) {
    if (img.empty()) return;
    const fs::path p = fs::path(img).is_absolute() ? fs::path(img) : fs::path(dir) / img;
    const std::string k = path_kind(p.string());
    XV_CHECK(k == "is a regular file", "{}: field '{}': image '{}' {}", where, key, p.string(),
             k.rfind("is a", 0) == 0 ? k + ", an image file was expected" : k);
  };
  exists(q.image, "qry_img_path");
  for (const auto& img : q.candidate_images) exists(img, "tgt_img_path");
}

void check_manifest_task(const BenchmarkTask& t, const std::string& where) {
  XV_CHECK(!t.name.empty(), "{}: field 'name' is empty", where);
  check_inner_file(t.file, where, "file");
  // A language code: two or three lowercase letters, optionally a region or script ("pt-BR", "zh-Hant").
  const size_t dash = t.language.find('-');
  const std::string base = t.language.substr(0, dash);
  const bool code = (base.size() == 2 || base.size() == 3) &&
                    std::all_of(base.begin(), base.end(), [](char c) { return c >= 'a' && c <= 'z'; }) &&
                    (dash == std::string::npos ||
                     (dash + 1 < t.language.size() &&
                      std::all_of(t.language.begin() + ptrdiff_t(dash) + 1, t.language.end(),
                                  [](char c) { return std::isalnum(static_cast<unsigned char>(c)); })));
  XV_CHECK(code, "{}: field 'language' is '{}'; expected a language code such as it, es, fr, de or en", where,
           t.language);
  XV_CHECK(one_of(t.direction, kDirections), "{}: field 'direction' is '{}'; expected one of {}", where, t.direction,
           join(kDirections));
  XV_CHECK(one_of(t.task_type, kTaskTypes), "{}: field 'task_type' is '{}'; expected one of {}", where, t.task_type,
           join(kTaskTypes));
  for (const auto& [key, tmpl] : {std::pair<const char*, const std::string&>{"query_template", t.query_template},
                                  {"target_template", t.target_template}}) {
    if (tmpl.empty()) continue;
    const size_t at = tmpl.find(kTemplatePlaceholder);
    XV_CHECK(at != std::string::npos, "{}: field '{}' is '{}': it has no {} placeholder for the text", where, key, tmpl,
             kTemplatePlaceholder);
    XV_CHECK(tmpl.find(kTemplatePlaceholder, at + 1) == std::string::npos,
             "{}: field '{}' is '{}': it has the {} placeholder more than once", where, key, tmpl, kTemplatePlaceholder);
  }
}

void check_unique_tasks(const Benchmark& b, const std::string& where) {
  std::set<std::string> names, files;
  for (const auto& t : b.tasks) {
    XV_CHECK(names.insert(t.name).second, "{}: task name '{}' appears twice", where, t.name);
    XV_CHECK(files.insert(t.file).second, "{}: task file '{}' appears twice", where, t.file);
    XV_CHECK(t.file != b.english_file, "{}: task file '{}' is also the English file", where, t.file);
  }
}

// ---- Reading ----

std::vector<BenchmarkQuery> read_task_file(const std::string& dir, const BenchmarkTask& t) {
  const std::string path = (fs::path(dir) / t.file).string();
  require_regular_file(path, fmt::format("the file of task '{}'", t.name));
  std::ifstream f(path);
  XV_CHECK(f.good(), "{}: cannot open the file of task '{}'", path, t.name);
  std::vector<BenchmarkQuery> qs;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    const json j = parse_jsonl_object(line, where);
    BenchmarkQuery q;
    q.line = n;
    q.text = get_string(j, "qry_text", where);
    q.image = get_optional_path(j, "qry_img_path", where);
    const json& tgt = field(j, "tgt_text", where);
    XV_CHECK(tgt.is_array(), "{}: field 'tgt_text' must be a list of strings, found {}", where, tgt.type_name());
    for (size_t c = 0; c < tgt.size(); ++c) {
      XV_CHECK(tgt[c].is_string(), "{}: field 'tgt_text' entry {} must be a string, found {}", where, c,
               tgt[c].type_name());
      q.candidates.push_back(tgt[c].get<std::string>());
    }
    if (auto it = j.find("tgt_img_path"); it != j.end() && !it->is_null()) {
      XV_CHECK(it->is_array(), "{}: field 'tgt_img_path' must be a list of paths (or null), found {}", where,
               it->type_name());
      for (size_t c = 0; c < it->size(); ++c) {
        const json& p = (*it)[c];
        XV_CHECK(p.is_null() || p.is_string(), "{}: field 'tgt_img_path' entry {} must be a string or null, found {}",
                 where, c, p.type_name());
        q.candidate_images.push_back(p.is_null() ? "" : p.get<std::string>());
      }
      XV_CHECK(q.candidate_images.size() == q.candidates.size(),
               "{}: field 'tgt_img_path' has {} entries, but 'tgt_text' has {}: one per candidate (null for none)",
               where, q.candidate_images.size(), q.candidates.size());
      // A list of nothing but nulls means no images.
      if (std::all_of(q.candidate_images.begin(), q.candidate_images.end(), [](const auto& s) { return s.empty(); }))
        q.candidate_images.clear();
    }
    q.lang = get_string(j, "lang", where);
    q.task_type = get_string(j, "task_type", where);
    check_query(t, q, where, dir);
    qs.push_back(std::move(q));
  }
  XV_CHECK(f.eof(), "{}: read error", path);
  XV_CHECK(int64_t(qs.size()) == t.num_queries, "{}: {} queries, but the manifest gives task '{}' num_queries {}",
           path, qs.size(), t.name, t.num_queries);
  return qs;
}

std::vector<std::string> read_english_file(const std::string& path, int64_t expected) {
  require_regular_file(path, "the English file");
  std::ifstream f(path);
  XV_CHECK(f.good(), "{}: cannot open the English file", path);
  std::vector<std::string> texts;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    const json j = parse_jsonl_object(line, where);
    std::string text = get_string(j, "text", where);
    XV_CHECK(!text.empty(), "{}: field 'text' is empty", where);
    texts.push_back(std::move(text));
  }
  XV_CHECK(int64_t(texts.size()) == expected, "{}: {} texts, but the manifest gives english num_texts {}", path,
           texts.size(), expected);
  return texts;
}

std::string dump(const json& j, const std::string& what) {
  try {
    return j.dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception&) {
    fail("{}: a text is not valid UTF-8", what);
  }
}

}  // namespace

Benchmark read_benchmark(const std::string& dir) {
  require_dir(dir, "benchmark folder");
  const std::string mpath = (fs::path(dir) / "benchmark.json").string();
  XV_CHECK(fs::is_regular_file(mpath), "{}: missing; a benchmark folder needs its manifest benchmark.json", mpath);
  json m;
  try {
    m = json::parse(read_file(mpath));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", mpath, e.what());
  }
  XV_CHECK(m.is_object(), "{}: expected a JSON object, found {}", mpath, m.type_name());
  Benchmark b;
  b.dir = dir;
  const std::string format = get_string(m, "format", mpath);
  XV_CHECK(format == kBenchmarkFormatName, "{}: field 'format' is '{}'; expected '{}'", mpath, format,
           kBenchmarkFormatName);
  b.format_version = get_int(m, "format_version", mpath, 0);
  XV_CHECK(b.format_version == kBenchmarkFormatVersion,
           "{}: unknown format_version {}; this build reads version {}", mpath, b.format_version,
           kBenchmarkFormatVersion);
  b.name = get_string(m, "name", mpath);
  if (m.contains("source")) b.source = get_string(m, "source", mpath);
  if (m.contains("created_by")) b.created_by = get_string(m, "created_by", mpath);
  if (m.contains("notes")) {
    const json& n = m["notes"];
    XV_CHECK(n.is_array(), "{}: field 'notes' must be a list of strings, found {}", mpath, n.type_name());
    for (size_t i = 0; i < n.size(); ++i) {
      XV_CHECK(n[i].is_string(), "{}: field 'notes' must be a list of strings; entry {} is {}", mpath, i,
               n[i].type_name());
      b.notes.push_back(n[i].get<std::string>());
    }
  }
  const json& tasks = field(m, "tasks", mpath);
  XV_CHECK(tasks.is_array() && !tasks.empty(), "{}: field 'tasks' must be a non-empty list", mpath);
  for (size_t i = 0; i < tasks.size(); ++i) {
    const std::string where = mpath + ": tasks[" + std::to_string(i) + "]";
    XV_CHECK(tasks[i].is_object(), "{}: expected an object, found {}", where, tasks[i].type_name());
    BenchmarkTask t;
    t.name = get_string(tasks[i], "name", where);
    t.file = get_string(tasks[i], "file", where);
    t.language = get_string(tasks[i], "language", where);
    t.direction = get_string(tasks[i], "direction", where);
    t.task_type = get_string(tasks[i], "task_type", where);
    t.num_queries = get_int(tasks[i], "num_queries", where, 1);
    t.num_candidates = get_int(tasks[i], "num_candidates", where, 1);
    if (tasks[i].contains("query_template")) t.query_template = get_string(tasks[i], "query_template", where);
    if (tasks[i].contains("target_template")) t.target_template = get_string(tasks[i], "target_template", where);
    check_manifest_task(t, where);
    b.tasks.push_back(std::move(t));
  }
  const json& en = field(m, "english", mpath);
  XV_CHECK(en.is_object(), "{}: field 'english' must be an object {{\"file\", \"num_texts\"}}, found {}", mpath,
           en.type_name());
  b.english_file = get_string(en, "file", mpath + ": english");
  check_inner_file(b.english_file, mpath + ": english", "file");
  const int64_t num_english = get_int(en, "num_texts", mpath + ": english", 0);
  check_unique_tasks(b, mpath);
  for (auto& t : b.tasks) t.queries = read_task_file(dir, t);
  b.english = read_english_file((fs::path(dir) / b.english_file).string(), num_english);
  return b;
}

void write_benchmark(const std::string& dir, const Benchmark& in) {
  Benchmark b = in;
  XV_CHECK(!b.tasks.empty(), "{}: a benchmark needs at least one task", dir);
  check_inner_file(b.english_file, dir + ": english", "file");
  for (auto& t : b.tasks) {
    check_manifest_task(t, dir + ": task '" + t.name + "'");
    XV_CHECK(!t.queries.empty(), "{}: task '{}' has no queries", dir, t.name);
    t.num_queries = int64_t(t.queries.size());
    t.num_candidates = int64_t(t.queries[0].candidates.size());
    for (size_t q = 0; q < t.queries.size(); ++q) check_query(t, t.queries[q], query_where(b, t, q), "");
  }
  check_unique_tasks(b, dir);
  fs::create_directories(dir);

  for (const auto& t : b.tasks) {
    std::string s;
    for (const auto& q : t.queries) {
      json j = {{"qry_text", q.text},
                {"qry_img_path", q.image.empty() ? json(nullptr) : json(q.image)},
                {"tgt_text", q.candidates}};
      if (!q.candidate_images.empty()) {
        json imgs = json::array();
        for (const auto& p : q.candidate_images) imgs.push_back(p.empty() ? json(nullptr) : json(p));
        j["tgt_img_path"] = imgs;
      }
      j["lang"] = q.lang;
      j["task_type"] = q.task_type;
      s += dump(j, "task '" + t.name + "'") + "\n";
    }
    write_file_atomic((fs::path(dir) / t.file).string(), s);
  }
  std::string s;
  for (const auto& text : b.english) s += dump(json{{"text", text}}, "english") + "\n";
  write_file_atomic((fs::path(dir) / b.english_file).string(), s);

  // The manifest last: a folder with a benchmark.json is complete.
  json m = {{"format", kBenchmarkFormatName}, {"format_version", kBenchmarkFormatVersion}, {"name", b.name},
            {"source", b.source},             {"created_by", b.created_by},               {"tasks", json::array()}};
  if (!b.notes.empty()) m["notes"] = b.notes;
  for (const auto& t : b.tasks) {
    json tj = {{"name", t.name},
               {"file", t.file},
               {"language", t.language},
               {"direction", t.direction},
               {"task_type", t.task_type},
               {"num_queries", t.num_queries},
               {"num_candidates", t.num_candidates}};
    if (!t.query_template.empty()) tj["query_template"] = t.query_template;
    if (!t.target_template.empty()) tj["target_template"] = t.target_template;
    m["tasks"].push_back(tj);
  }
  m["english"] = {{"file", b.english_file}, {"num_texts", b.english.size()}};
  write_file_atomic((fs::path(dir) / "benchmark.json").string(),
                    m.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

std::string apply_template(const std::string& tmpl, const std::string& text) {
  if (tmpl.empty()) return text;
  const size_t at = tmpl.find(kTemplatePlaceholder);
  XV_CHECK(at != std::string::npos, "template '{}' has no {} placeholder", tmpl, kTemplatePlaceholder);
  return tmpl.substr(0, at) + text + tmpl.substr(at + std::string_view(kTemplatePlaceholder).size());
}

std::string query_where(const Benchmark& b, const BenchmarkTask& t, size_t q) {
  if (!b.dir.empty() && q < t.queries.size() && t.queries[q].line > 0)
    return (fs::path(b.dir) / t.file).string() + ":" + std::to_string(t.queries[q].line);
  return t.file + ": query " + std::to_string(q + 1);
}

}  // namespace xv
