// The evaluation report in an output folder: results.json (every number), results.md (a table: rows
// language x direction, P@1 / R@5 / MRR before -> after and the gain, averages over languages, the English
// cosine; for translated multimodal tasks also the paper's shape: task x language, family x language with the
// averages, the English-vs-non-English gap), p_at_1.svg (grouped bars), p_at_1_families.svg (with an MMMEB
// view) and, given a training run, loss.svg (its losses against the step).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/runner.h"

namespace xv {

inline constexpr const char* kResultsFormatName = "xvlm2vec-eval-results";
inline constexpr int64_t kResultsFormatVersion = 1;

// One row of the table: the tasks of one (language, direction), their metrics averaged (one task each for a
// text benchmark; several for MMMEB, whose languages hold many tasks).
struct LanguageRow {
  std::string language, direction;
  int64_t tasks = 0;
  RankMetrics before, after;
};

// Rows in order of first appearance in the benchmark.
std::vector<LanguageRow> language_rows(const EvalResults& r);
// Per direction (in order of first appearance): the mean over its languages' rows.
std::vector<LanguageRow> direction_averages(const std::vector<LanguageRow>& rows);

// The MMMEB view, for benchmarks of translated tasks (direction xx->xx): P@1 (and the rest) per task family and
// language, averaged over the tasks; per language over all its tasks; and the English-vs-non-English gap.
struct FamilyView {
  std::vector<std::string> languages;  // in order of first appearance
  std::vector<std::string> families;   // in kTaskTypes order, those present
  // [family][language] (tasks == 0: none), [family] averaged over its languages, [language] over all its tasks.
  std::vector<std::vector<LanguageRow>> cells;
  std::vector<LanguageRow> family_average, language_average;
  bool has_gap = false;  // English and at least one other language
  RankMetrics gap_before, gap_after;  // English minus the mean of the other languages' averages
};
// Empty (no languages) when the benchmark has no xx->xx task.
FamilyView family_view(const EvalResults& r);
// "ImageNet-1K/it" -> "ImageNet-1K": a task's dataset, its name without the "/<language>" it ends with.
std::string task_dataset(const TaskResult& t);

nlohmann::json results_json(const EvalResults& r);
std::string results_markdown(const EvalResults& r);
std::string p_at_1_chart(const EvalResults& r);
// P@1 per task family (averaged over its languages), before and after; "" without an MMMEB view.
std::string family_chart(const EvalResults& r);
// loss, loss_en and loss_xx against step from a training run's metrics.jsonl (docs/config.md).
std::string loss_chart(const std::string& metrics_jsonl);

// Writes results.json, results.md, p_at_1.svg and, when train_dir is not empty, loss.svg from
// train_dir/metrics.jsonl, into out_dir (created when missing). Returns the Markdown.
std::string write_report(const EvalResults& r, const std::string& out_dir, const std::string& train_dir);

// "xx->en" for language "it" reads "it→en".
std::string direction_label(const std::string& language, const std::string& direction);

}  // namespace xv
