// The MMMEB view of the report (eval/report.h family_view): per task family and language, per language, the
// English-vs-non-English gap, in results.json, results.md and p_at_1_families.svg, on results whose ranks are
// set by hand (every expected number below is computed by hand from them).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/file_util.h"
#include "eval/report.h"

namespace {

namespace fs = std::filesystem;

// A task whose before and after metrics come from the given gold ranks.
xv::TaskResult task(const std::string& name, const std::string& lang, const std::string& family,
                    std::vector<int64_t> before, std::vector<int64_t> after) {
  xv::TaskResult t;
  t.name = name;
  t.language = lang;
  t.direction = "xx->xx";
  t.task_type = family;
  t.queries = int64_t(before.size());
  t.candidates = 10;
  t.ranks_before = before;
  t.ranks_after = after;
  t.before = xv::rank_metrics(before);
  t.after = xv::rank_metrics(after);
  return t;
}

xv::EvalResults results() {
  xv::EvalResults r;
  r.benchmark_name = "mmmeb-mini";
  r.has_after = true;
  // P@1 before / after per task:
  //   ImageNet-1K  en 1.0 / 1.0   it 0.5 / 1.0   de 0.0 / 0.5   (classification)
  //   VOC2007      en 0.5 / 0.5   it 0.0 / 0.5                  (classification)
  //   MSCOCO_t2i   en 1.0 / 1.0   it 0.5 / 0.5   de 0.5 / 1.0   (retrieval)
  r.tasks = {task("ImageNet-1K/en", "en", "classification", {1, 1}, {1, 1}),
             task("ImageNet-1K/it", "it", "classification", {1, 3}, {1, 1}),
             task("ImageNet-1K/de", "de", "classification", {2, 3}, {1, 2}),
             task("VOC2007/en", "en", "classification", {1, 2}, {1, 2}),
             task("VOC2007/it", "it", "classification", {2, 2}, {1, 4}),
             task("MSCOCO_t2i/en", "en", "retrieval", {1, 1}, {1, 1}),
             task("MSCOCO_t2i/it", "it", "retrieval", {1, 5}, {1, 6}),
             task("MSCOCO_t2i/de", "de", "retrieval", {7, 1}, {1, 1})};
  return r;
}

TEST(EvalFamilyView, AveragesPerFamilyLanguageAndTheGap) {
  const xv::FamilyView v = xv::family_view(results());
  ASSERT_EQ(v.languages, (std::vector<std::string>{"en", "it", "de"}));
  ASSERT_EQ(v.families, (std::vector<std::string>{"retrieval", "classification"}));
  // classification: en (1 + 0.5) / 2, it (0.5 + 0) / 2, de 0; average over the three languages.
  const auto& cls = v.cells[1];
  EXPECT_DOUBLE_EQ(cls[0].before.p_at_1, 0.75);
  EXPECT_DOUBLE_EQ(cls[1].before.p_at_1, 0.25);
  EXPECT_DOUBLE_EQ(cls[2].before.p_at_1, 0.0);
  EXPECT_EQ(cls[0].tasks, 2);
  EXPECT_DOUBLE_EQ(cls[1].after.p_at_1, 0.75);
  EXPECT_DOUBLE_EQ(v.family_average[1].before.p_at_1, (0.75 + 0.25 + 0.0) / 3);
  EXPECT_DOUBLE_EQ(v.family_average[0].after.p_at_1, (1.0 + 0.5 + 1.0) / 3);
  // Per language over all its tasks: en (1 + 0.5 + 1) / 3, it (0.5 + 0 + 0.5) / 3, de (0 + 0.5) / 2.
  EXPECT_DOUBLE_EQ(v.language_average[0].before.p_at_1, 2.5 / 3);
  EXPECT_DOUBLE_EQ(v.language_average[1].before.p_at_1, 1.0 / 3);
  EXPECT_DOUBLE_EQ(v.language_average[2].before.p_at_1, 0.25);
  ASSERT_TRUE(v.has_gap);
  EXPECT_NEAR(v.gap_before.p_at_1, 2.5 / 3 - (1.0 / 3 + 0.25) / 2, 1e-12);
  // after: en (1 + 0.5 + 1) / 3, it (1 + 0.5 + 0.5) / 3, de (0.5 + 1) / 2.
  EXPECT_NEAR(v.gap_after.p_at_1, 2.5 / 3 - (2.0 / 3 + 0.75) / 2, 1e-12);
  // A cross-lingual task beside them (the suite's name tasks: it->en) stays out of the view: same cells, languages,
  // families and gap.
  xv::EvalResults mixed = results();
  mixed.tasks.push_back(task("names/it->en", "it", "retrieval", {9, 9}, {9, 9}));
  mixed.tasks.back().direction = "xx->en";
  mixed.tasks.push_back(task("names-only/fr->en", "fr", "vqa", {1, 1}, {1, 1}));
  mixed.tasks.back().direction = "xx->en";
  const xv::FamilyView m = xv::family_view(mixed);
  EXPECT_EQ(m.languages, v.languages);
  EXPECT_EQ(m.families, v.families);
  EXPECT_DOUBLE_EQ(m.cells[0][1].before.p_at_1, v.cells[0][1].before.p_at_1);
  EXPECT_EQ(m.cells[0][1].tasks, 1);
  EXPECT_DOUBLE_EQ(m.gap_before.p_at_1, v.gap_before.p_at_1);
  EXPECT_EQ(xv::results_markdown(mixed).find("| names |"), std::string::npos);
  // A text benchmark (no xx->xx task) has no such view.
  xv::EvalResults text = results();
  for (auto& t : text.tasks) t.direction = "xx->en";
  EXPECT_TRUE(xv::family_view(text).languages.empty());
}

TEST(EvalFamilyView, ReportCarriesIt) {
  const xv::EvalResults r = results();
  const nlohmann::json j = xv::results_json(r);
  EXPECT_DOUBLE_EQ(j["families"]["classification"]["it"]["before"]["p_at_1"].get<double>(), 0.25);
  EXPECT_EQ(j["families"]["classification"]["it"]["tasks"].get<int64_t>(), 2);
  EXPECT_FALSE(j["families"]["retrieval"].contains("xx"));
  EXPECT_DOUBLE_EQ(j["language_averages"]["de"]["after"]["p_at_1"].get<double>(), 0.75);
  EXPECT_NEAR(j["english_gap"]["before"]["p_at_1"].get<double>(), 2.5 / 3 - (1.0 / 3 + 0.25) / 2, 1e-12);
  const std::string md = xv::results_markdown(r);
  for (const char* want : {"| task | family | en | it | de |", "| ImageNet-1K | classification | 100.0 → 100.0 (+0.0) | "
                                                                "50.0 → 100.0 (+50.0) | 0.0 → 50.0 (+50.0) |",
                           "| VOC2007 | classification | 50.0 → 50.0 (+0.0) | 0.0 → 50.0 (+50.0) | – |",
                           "| classification | 75.0 → 75.0 (+0.0) | 25.0 → 75.0 (+50.0) | 0.0 → 50.0 (+50.0) | "
                           "33.3 → 66.7 (+33.3) |",
                           "English minus the mean of the other languages (P@1, points): before +54.2, after +12.5"})
    EXPECT_NE(md.find(want), std::string::npos) << want << "\n" << md;
  const fs::path d = fs::temp_directory_path() / ("xv_family_view_" + std::to_string(::getpid()));
  fs::remove_all(d);
  xv::write_report(r, d.string(), "");
  const std::string svg = xv::read_file((d / "p_at_1_families.svg").string());
  EXPECT_NE(svg.find("Precision@1 per task family"), std::string::npos);
  EXPECT_NE(svg.find("classification"), std::string::npos);
  fs::remove_all(d);
}

}  // namespace
