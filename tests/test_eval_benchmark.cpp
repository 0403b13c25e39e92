// The benchmark folder format (eval/benchmark.h): the fixture written by tools/make_eval_fixtures.py (not
// by the C++ writer) reads; write -> read round-trips; and every bad input gives an error naming the file
// (with the line for task files) and the field.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"
#include "eval/benchmark.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const std::string kFix = XV_FIXTURES;
const std::string kTiny = kFix + "/eval/tiny_benchmark";

std::string tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("xv_eval_bench_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// A copy of the fixture benchmark to break.
std::string copy_tiny(const std::string& tag) {
  const std::string d = tmp_dir(tag);
  fs::copy(kTiny, d, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return d;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> v;
  for (std::string l; std::getline(f, l);) v.push_back(l);
  return v;
}

void write_lines(const std::string& path, const std::vector<std::string>& v) {
  std::ofstream f(path);
  for (const auto& l : v) f << l << "\n";
}

// Replaces line `n` (1-based) of a task file by the result of `edit` on its JSON.
void edit_line(const std::string& path, size_t n, const std::function<void(json&)>& edit) {
  auto v = lines_of(path);
  json j = json::parse(v.at(n - 1));
  edit(j);
  v[n - 1] = j.dump();
  write_lines(path, v);
}

void edit_manifest(const std::string& dir, const std::function<void(json&)>& edit) {
  json m = json::parse(xv::read_file(dir + "/benchmark.json"));
  edit(m);
  std::ofstream(dir + "/benchmark.json") << m.dump(2);
}

// The error message of read_benchmark(dir); fails the test when it does not throw.
std::string read_error(const std::string& dir) {
  try {
    xv::read_benchmark(dir);
  } catch (const xv::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "read_benchmark accepted " << dir;
  return "";
}

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << (msg)

TEST(EvalBenchmark, ReadsTheFixture) {
  const xv::Benchmark b = xv::read_benchmark(kTiny);
  EXPECT_EQ(b.name, "tiny");
  EXPECT_EQ(b.format_version, 1);
  ASSERT_EQ(b.tasks.size(), 5u);
  EXPECT_EQ(b.tasks[0].name, "de->en");
  EXPECT_EQ(b.tasks[0].direction, "xx->en");
  EXPECT_EQ(b.tasks[1].direction, "en->xx");
  EXPECT_EQ(b.tasks[4].language, "fr");
  EXPECT_EQ(b.tasks[4].num_candidates, 9);
  for (const auto& t : b.tasks) {
    EXPECT_EQ(int64_t(t.queries.size()), t.num_queries);
    for (const auto& q : t.queries) {
      EXPECT_EQ(int64_t(q.candidates.size()), t.num_candidates);
      EXPECT_EQ(q.lang, t.language);
      EXPECT_EQ(q.task_type, "retrieval");
      EXPECT_TRUE(q.image.empty());
    }
  }
  EXPECT_EQ(b.english.size(), 10u);
  EXPECT_EQ(b.english[0], "Cannot open the file.");
  // The line numbers point into the files (messages use them).
  EXPECT_EQ(b.tasks[0].queries[2].line, 3);
  EXPECT_EQ(xv::query_where(b, b.tasks[0], 2), (fs::path(kTiny) / "de_to_en.jsonl").string() + ":3");
}

TEST(EvalBenchmark, WriteThenReadRoundTrips) {
  xv::Benchmark b = xv::read_benchmark(kTiny);
  b.tasks[0].queries[0].text = "tab\there, quote \" and newline\n and ünïcödé";
  const std::string d = tmp_dir("roundtrip");
  xv::write_benchmark(d + "/out", b);
  const xv::Benchmark c = xv::read_benchmark(d + "/out");
  ASSERT_EQ(c.tasks.size(), b.tasks.size());
  for (size_t t = 0; t < b.tasks.size(); ++t) {
    EXPECT_EQ(c.tasks[t].name, b.tasks[t].name);
    EXPECT_EQ(c.tasks[t].file, b.tasks[t].file);
    EXPECT_EQ(c.tasks[t].direction, b.tasks[t].direction);
    EXPECT_EQ(c.tasks[t].num_queries, b.tasks[t].num_queries);
    ASSERT_EQ(c.tasks[t].queries.size(), b.tasks[t].queries.size());
    for (size_t q = 0; q < b.tasks[t].queries.size(); ++q) {
      EXPECT_EQ(c.tasks[t].queries[q].text, b.tasks[t].queries[q].text);
      EXPECT_EQ(c.tasks[t].queries[q].candidates, b.tasks[t].queries[q].candidates);
    }
  }
  EXPECT_EQ(c.english, b.english);
  EXPECT_EQ(c.name, b.name);
  fs::remove_all(d);
}

TEST(EvalBenchmark, TemplatesRoundTripAndApply) {
  xv::Benchmark b = xv::read_benchmark(kTiny);
  b.tasks[0].query_template = "Trova la traduzione inglese: {text}";
  b.tasks[0].target_template = "{text}.";
  const std::string d = fs::temp_directory_path() / ("xv_bench_tmpl_" + std::to_string(::getpid()));
  fs::remove_all(d);
  xv::write_benchmark(d, b);
  const xv::Benchmark c = xv::read_benchmark(d);
  EXPECT_EQ(c.tasks[0].query_template, "Trova la traduzione inglese: {text}");
  EXPECT_EQ(c.tasks[0].target_template, "{text}.");
  EXPECT_TRUE(c.tasks[1].query_template.empty());
  EXPECT_EQ(xv::apply_template(c.tasks[0].query_template, "Apri"), "Trova la traduzione inglese: Apri");
  EXPECT_EQ(xv::apply_template(c.tasks[0].target_template, "Open"), "Open.");
  EXPECT_EQ(xv::apply_template("", "Open"), "Open");
  fs::remove_all(d);
}

TEST(EvalBenchmark, WriterRefusesWhatWouldNotRead) {
  xv::Benchmark b = xv::read_benchmark(kTiny);
  const std::string d = tmp_dir("refuse");
  xv::Benchmark bad = b;
  bad.tasks[1].queries[3].candidates.pop_back();  // 29 where the task's first query has 30
  try {
    xv::write_benchmark(d + "/x", bad);
    ADD_FAILURE() << "write_benchmark accepted a ragged task";
  } catch (const xv::Error& e) {
    EXPECT_HAS(std::string(e.what()), "has 29 candidates");
  }
  bad = b;
  bad.tasks[2].task_type = "captioning";
  EXPECT_THROW(xv::write_benchmark(d + "/y", bad), xv::Error);
  EXPECT_FALSE(fs::exists(d + "/y/benchmark.json"));
  fs::remove_all(d);
}

TEST(EvalBenchmark, TaskFileErrorsNameFileLineAndField) {
  struct Case {
    const char* name;
    size_t line;
    std::function<void(json&)> edit;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"missing field", 3, [](json& j) { j.erase("tgt_text"); }, "de_to_en.jsonl:3: missing field 'tgt_text'"},
      {"missing lang", 2, [](json& j) { j.erase("lang"); }, "de_to_en.jsonl:2: missing field 'lang'"},
      {"empty candidate list", 4, [](json& j) { j["tgt_text"] = json::array(); },
       "de_to_en.jsonl:4: field 'tgt_text' is an empty list"},
      {"candidate count", 5, [](json& j) { j["tgt_text"].erase(j["tgt_text"].size() - 1); },
       "de_to_en.jsonl:5: field 'tgt_text' has 29 candidates, but the manifest gives task 'de->en' num_candidates 30"},
      {"non-string query", 1, [](json& j) { j["qry_text"] = 5; },
       "de_to_en.jsonl:1: field 'qry_text' must be a string, found number"},
      {"non-string candidate", 6, [](json& j) { j["tgt_text"][2] = json::array(); },
       "de_to_en.jsonl:6: field 'tgt_text' entry 2 must be a string, found array"},
      {"candidates not a list", 6, [](json& j) { j["tgt_text"] = "a"; },
       "de_to_en.jsonl:6: field 'tgt_text' must be a list of strings, found string"},
      {"unknown task type", 2, [](json& j) { j["task_type"] = "captioning"; },
       "de_to_en.jsonl:2: field 'task_type' is 'captioning'; expected one of retrieval, classification, vqa, grounding"},
      {"other known task type", 2, [](json& j) { j["task_type"] = "vqa"; },
       "de_to_en.jsonl:2: field 'task_type' is 'vqa', but the manifest gives task 'de->en' type 'retrieval'"},
      {"language mismatch", 1, [](json& j) { j["lang"] = "it"; },
       "de_to_en.jsonl:1: field 'lang' is 'it', but the manifest gives task 'de->en' language 'de'"},
      {"empty text", 1, [](json& j) { j["qry_text"] = ""; }, "de_to_en.jsonl:1: field 'qry_text' is empty"},
      {"empty candidate", 1, [](json& j) { j["tgt_text"][7] = ""; }, "de_to_en.jsonl:1: field 'tgt_text' entry 7 is empty"},
      {"missing image", 1, [](json& j) { j["qry_img_path"] = "nope.png"; },
       "de_to_en.jsonl:1: field 'qry_img_path': image"},
      {"image not a path", 1, [](json& j) { j["qry_img_path"] = 3; },
       "de_to_en.jsonl:1: field 'qry_img_path' must be a string (a path) or null"},
      {"image list length", 1, [](json& j) { j["tgt_img_path"] = json::array({"a.png"}); },
       "de_to_en.jsonl:1: field 'tgt_img_path' has 1 entries, but 'tgt_text' has 30"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string d = copy_tiny("line");
    edit_line(d + "/de_to_en.jsonl", c.line, c.edit);
    EXPECT_HAS(read_error(d), c.want);
    fs::remove_all(d);
  }
}

TEST(EvalBenchmark, FileLevelErrors) {
  {
    const std::string d = copy_tiny("json");
    auto v = lines_of(d + "/en_to_es.jsonl");
    v[3] = "{\"qry_text\": \"a\",";
    write_lines(d + "/en_to_es.jsonl", v);
    EXPECT_HAS(read_error(d), "en_to_es.jsonl:4: not valid JSON");
    fs::remove_all(d);
  }
  {
    const std::string d = copy_tiny("array");
    auto v = lines_of(d + "/en_to_es.jsonl");
    v[1] = "[1, 2]";
    write_lines(d + "/en_to_es.jsonl", v);
    EXPECT_HAS(read_error(d), "en_to_es.jsonl:2: each line must be a JSON object, found array");
    fs::remove_all(d);
  }
  {
    const std::string d = copy_tiny("count");
    auto v = lines_of(d + "/fr_to_en.jsonl");
    v.pop_back();
    write_lines(d + "/fr_to_en.jsonl", v);
    EXPECT_HAS(read_error(d), "fr_to_en.jsonl: 4 queries, but the manifest gives task 'fr->en' num_queries 5");
    fs::remove_all(d);
  }
  {
    const std::string d = copy_tiny("english");
    write_lines(d + "/english.jsonl", {"{\"text\": \"a\"}", "{\"txt\": \"b\"}"});
    EXPECT_HAS(read_error(d), "english.jsonl:2: missing field 'text'");
    write_lines(d + "/english.jsonl", {"{\"text\": \"a\"}"});
    EXPECT_HAS(read_error(d), "english.jsonl: 1 texts, but the manifest gives english num_texts 10");
    fs::remove(d + "/english.jsonl");
    EXPECT_HAS(read_error(d), "english.jsonl: the English file does not exist");
    fs::remove_all(d);
  }
  {
    const std::string d = copy_tiny("taskfile");
    fs::remove(d + "/en_to_de.jsonl");
    EXPECT_HAS(read_error(d), "en_to_de.jsonl: the file of task 'en->de' does not exist");
    fs::remove_all(d);
  }
  EXPECT_HAS(read_error(kFix + "/eval/no_such_benchmark"), "no_such_benchmark: benchmark folder does not exist");
  {
    const std::string d = tmp_dir("nomanifest");
    EXPECT_HAS(read_error(d), "benchmark.json: missing; a benchmark folder needs its manifest");
    std::ofstream(d + "/benchmark.json") << "{oops";
    EXPECT_HAS(read_error(d), "benchmark.json: not valid JSON");
    fs::remove_all(d);
  }
}

TEST(EvalBenchmark, ManifestErrors) {
  struct Case {
    const char* name;
    std::function<void(json&)> edit;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"unknown format version", [](json& m) { m["format_version"] = 2; },
       "benchmark.json: unknown format_version 2; this build reads version 1"},
      {"version not an integer", [](json& m) { m["format_version"] = "1"; },
       "benchmark.json: field 'format_version' must be an integer, found string"},
      {"wrong format name", [](json& m) { m["format"] = "mmeb"; },
       "benchmark.json: field 'format' is 'mmeb'; expected 'xvlm2vec-benchmark'"},
      {"no tasks", [](json& m) { m["tasks"] = json::array(); }, "benchmark.json: field 'tasks' must be a non-empty list"},
      {"missing task field", [](json& m) { m["tasks"][1].erase("num_candidates"); },
       "benchmark.json: tasks[1]: missing field 'num_candidates'"},
      {"unknown task type", [](json& m) { m["tasks"][2]["task_type"] = "ranking"; },
       "benchmark.json: tasks[2]: field 'task_type' is 'ranking'; expected one of retrieval, classification, vqa, grounding"},
      {"unknown direction", [](json& m) { m["tasks"][0]["direction"] = "de->en"; },
       "benchmark.json: tasks[0]: field 'direction' is 'de->en'; expected one of xx->en, en->xx, xx->xx"},
      {"zero candidates", [](json& m) { m["tasks"][0]["num_candidates"] = 0; },
       "benchmark.json: tasks[0]: field 'num_candidates' must be at least 1, found 0"},
      {"file outside", [](json& m) { m["tasks"][0]["file"] = "../x.jsonl"; },
       "benchmark.json: tasks[0]: field 'file' is '../x.jsonl'; expected a relative path inside the benchmark folder"},
      {"duplicate task", [](json& m) { m["tasks"][1]["name"] = "de->en"; },
       "benchmark.json: task name 'de->en' appears twice"},
      {"no english", [](json& m) { m.erase("english"); }, "benchmark.json: missing field 'english'"},
      {"template without placeholder", [](json& m) { m["tasks"][0]["query_template"] = "Trova la traduzione"; },
       "benchmark.json: tasks[0]: field 'query_template' is 'Trova la traduzione': it has no {text} placeholder"},
      {"template placeholder twice", [](json& m) { m["tasks"][1]["target_template"] = "{text} / {text}"; },
       "benchmark.json: tasks[1]: field 'target_template' is '{text} / {text}': it has the {text} placeholder more "
       "than once"},
      {"language not a code", [](json& m) { m["tasks"][0]["language"] = "Deutsch"; },
       "benchmark.json: tasks[0]: field 'language' is 'Deutsch'; expected a language code"},
      {"template not a string", [](json& m) { m["tasks"][0]["query_template"] = 3; },
       "benchmark.json: tasks[0]: field 'query_template' must be a string, found number"},
      {"candidate count", [](json& m) { m["tasks"][4]["num_candidates"] = 10; },
       "fr_to_en.jsonl:1: field 'tgt_text' has 9 candidates, but the manifest gives task 'fr->en' num_candidates 10"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string d = copy_tiny("manifest");
    edit_manifest(d, c.edit);
    EXPECT_HAS(read_error(d), c.want);
    fs::remove_all(d);
  }
}

}  // namespace
