// Runs a benchmark on a model: "before" is the teacher (the base model, adapters off), "after" the student
// (the base with the adapter loaded). Every distinct item of the benchmark is embedded once per model
// (candidate pools overlap across queries and tasks), L2-normalised, and candidates are scored by dot
// product with the query (docs/design.md §2).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "eval/benchmark.h"
#include "eval/metrics.h"

namespace xv {

struct TaskResult {
  std::string name, language, direction, task_type;
  int64_t queries = 0, candidates = 0;
  RankMetrics before, after;                     // after: only with an adapter
  std::vector<int64_t> ranks_before, ranks_after;  // (queries) the gold's rank per query
};

struct EvalResults {
  std::string model, adapter, benchmark, benchmark_name;  // adapter empty: no "after" column
  std::string arch;
  std::vector<std::string> notes;  // the benchmark's notes (what it leaves out and why)
  int64_t dim = 0;
  bool has_after = false;
  std::vector<TaskResult> tasks;
  int64_t english_texts = 0;
  std::optional<double> english_cosine;  // mean cos(student, teacher) over english.jsonl; with an adapter only
  int64_t unique_texts = 0;   // distinct items embedded (a text, or a text with an image)
  int64_t unique_images = 0;  // of which with an image
  double embed_seconds = 0;  // both models, all texts
};

struct EvalRunOptions {
  int64_t batch_size = 64;
  bool truncate = false;  // bert: cut texts at the model's limit (as sentence-transformers does) instead of failing
  // Called before a model's first batch (done = 0) and after each batch: which model ("teacher" or
  // "student"), items embedded so far, items in all.
  std::function<void(const std::string& model, int64_t done, int64_t total)> progress;
};

// Loads the model folder as the teacher ("before") and, with `adapter_dir`, the model with the adapter merged in
// as the student ("after"), both through the inference pipeline (models/embedder.h); embeds every distinct
// item of the benchmark once per model (a text, or a text with its image: keyed by content, so a candidate
// many queries share is embedded once), scores and ranks; records the paths in the results. A benchmark with
// images needs a model with an image path (phi3_v); otherwise the error names the first task that has one.
EvalResults evaluate(const std::string& model_dir, const std::string& adapter_dir, const Benchmark& b,
                     const EvalRunOptions& opt);

}  // namespace xv
