// The benchmark folder (docs/benchmark-format.md, format version 1): benchmark.json (the manifest), one
// JSONL per task in the VLM2Vec evaluation style (a query, its candidates, the gold first), and
// english.jsonl (held-out English texts for the English-preservation score). Reader and writer; the reader
// checks everything and names file:line and the field in its errors.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace xv {

inline constexpr const char* kBenchmarkFormatName = "xvlm2vec-benchmark";
inline constexpr int64_t kBenchmarkFormatVersion = 1;

// Every MMMEB task is a ranking over candidates with the gold at index 0; the type only says what the
// candidates are (texts to retrieve, class labels, answers, image regions).
inline const std::vector<std::string> kTaskTypes = {"retrieval", "classification", "vqa", "grounding"};
// Which language is on which side: the translation retrieves its English text, English retrieves the
// translation, or both sides are in the task's language (the translated MMMEB tasks).
inline const std::vector<std::string> kDirections = {"xx->en", "en->xx", "xx->xx"};

struct BenchmarkQuery {
  std::string text;
  std::string image;                    // path as written in the file (relative to the folder), or empty
  std::vector<std::string> candidates;  // (num_candidates) texts; candidates[0] is the gold
  std::vector<std::string> candidate_images;  // empty, or (num_candidates) paths ("" = none)
  std::string lang;
  std::string task_type;
  int64_t line = 0;  // 1-based line in the task file (for messages)
};

struct BenchmarkTask {
  std::string name;       // e.g. "it->en"
  std::string file;       // relative to the benchmark folder, e.g. "it_to_en.jsonl"
  std::string language;   // the non-English language, e.g. "it"
  std::string direction;  // one of kDirections
  std::string task_type;  // one of kTaskTypes
  int64_t num_queries = 0;
  int64_t num_candidates = 0;  // per query, the gold included
  // The task's instructions (VLM2Vec's per-task prompts, in the task's language): each holds "{text}" once,
  // which the query's (the candidates') text replaces before embedding; empty = the text as written.
  std::string query_template, target_template;
  std::vector<BenchmarkQuery> queries;
};

inline constexpr const char* kTemplatePlaceholder = "{text}";
// A template with the text put in its placeholder (the text itself for an empty template).
std::string apply_template(const std::string& tmpl, const std::string& text);

struct Benchmark {
  int64_t format_version = kBenchmarkFormatVersion;
  std::string name;
  std::string source;      // what it was made from (free text)
  std::string created_by;  // the command line that made it
  // What the benchmark leaves out and why (e.g. "vqa: it, es, fr, de skipped: the source has no human
  // translation"); shown in the report.
  std::vector<std::string> notes;
  std::vector<BenchmarkTask> tasks;
  std::string english_file = "english.jsonl";
  std::vector<std::string> english;  // held-out English texts
  std::string dir;                   // the folder it was read from (empty for one made in memory)
};

// Reads and checks a benchmark folder. Errors name file:line and the field, and say what was expected.
Benchmark read_benchmark(const std::string& dir);

// Writes `b` into `dir` (created when missing): every file through a temporary name renamed at the end.
// num_queries and num_candidates of each task are taken from its queries. Refuses a benchmark that would
// not read back (the same checks as read_benchmark).
void write_benchmark(const std::string& dir, const Benchmark& b);

// One line of a JSONL file as a JSON object; errors name `where` (file:line): not JSON, or not an object.
nlohmann::json parse_jsonl_object(const std::string& line, const std::string& where);

// The source location of a query, "DIR/FILE:LINE" (or "FILE:query N" for one made in memory).
std::string query_where(const Benchmark& b, const BenchmarkTask& t, size_t q);

}  // namespace xv
