// Runs a benchmark on a model: "before" is the teacher (the base model, adapters off), "after" the student
// (the base with the adapter loaded). Every distinct text of the benchmark is embedded once per model
// (candidate pools overlap across queries and tasks), L2-normalised, and candidates are scored by dot
// product with the query (docs/design.md §2).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/kd/kd_model.h"
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
  int64_t dim = 0;
  bool has_after = false;
  std::vector<TaskResult> tasks;
  int64_t english_texts = 0;
  std::optional<double> english_cosine;  // mean cos(student, teacher) over english.jsonl; with an adapter only
  int64_t unique_texts = 0;
  double embed_seconds = 0;  // both models, all texts
};

struct EvalRunOptions {
  int64_t batch_size = 64;
  // Called before a model's first batch (done = 0) and after each batch: which model ("teacher" or
  // "student"), texts embedded so far, texts in all.
  std::function<void(const std::string& model, int64_t done, int64_t total)> progress;
};

// Evaluates `b` with `model` as loaded (adapters, if any, already in place). `with_student`: also embed with
// the student ("after"); without it only the teacher column is filled.
EvalResults run_benchmark(KdModel& model, const Benchmark& b, bool with_student, const EvalRunOptions& opt);

// Loads the model folder (LoRA over the backbone's default targets; the adapter from `adapter_dir` when
// given) and runs run_benchmark; records the paths in the results.
EvalResults evaluate(const std::string& model_dir, const std::string& adapter_dir, const Benchmark& b,
                     const EvalRunOptions& opt);

}  // namespace xv
