// The evaluation report (eval/report.h). The JSON keeps fractions in [0, 1]; the Markdown shows percent
// with one decimal (MRR too, times 100), which is how retrieval papers print them.
#include "eval/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "core/file_util.h"
#include "eval/svg_chart.h"

namespace xv {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The value of metric `name` of m.
double metric_value(const RankMetrics& m, const char* name) {
  double out = 0;
  m.each([&](const char* n, double v) {
    if (std::string_view(n) == name) out = v;
  });
  return out;
}

json metrics_json(const RankMetrics& m) {
  json j = json::object();
  m.each([&](const char* name, double v) { j[name] = v; });
  return j;
}

json before_after(const RankMetrics& before, const RankMetrics& after, bool has_after) {
  json j = {{"before", metrics_json(before)}};
  if (has_after) {
    j["after"] = metrics_json(after);
    json gain = json::object();
    after.each([&](const char* name, double v) { gain[name] = v - metric_value(before, name); });
    j["gain"] = gain;
  }
  return j;
}

void add_into(RankMetrics& acc, const RankMetrics& m) {
  acc.queries += m.queries;
  acc.each([&](const char* name, double& v) { v += metric_value(m, name); });
}

void divide(RankMetrics& m, double n) {
  m.each([&](const char*, double& v) { v /= n; });
}

std::string pct(double v) { return fmt::format("{:.1f}", 100 * v); }

std::string cell(double before, double after, bool has_after) {
  if (!has_after) return pct(before);
  // Rounded first, so a gain that rounds to zero prints "+0.0", never "-0.0".
  double gain = std::round(1000 * (after - before)) / 10;
  if (gain == 0) gain = 0;
  return fmt::format("{} → {} ({}{:.1f})", pct(before), pct(after), gain >= 0 ? "+" : "", gain);
}

std::string table_row(const std::string& a, const std::string& b, const LanguageRow& r, bool has_after) {
  return fmt::format("| {} | {} | {} | {} | {} |\n", a, b, cell(r.before.p_at_1, r.after.p_at_1, has_after),
                     cell(r.before.r_at_5, r.after.r_at_5, has_after), cell(r.before.mrr, r.after.mrr, has_after));
}

double number_or_nan(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::numeric_limits<double>::quiet_NaN();  // NaN is written as null
  XV_CHECK(it->is_number(), "{}: field '{}' must be a number, found {}", where, key, it->type_name());
  return it->get<double>();
}

}  // namespace

std::string direction_label(const std::string& language, const std::string& direction) {
  if (direction == "xx->en") return language + "→en";
  if (direction == "en->xx") return "en→" + language;
  if (direction == "xx->xx") return language;
  return language + " " + direction;
}

std::vector<LanguageRow> language_rows(const EvalResults& r) {
  std::vector<LanguageRow> rows;
  for (const auto& t : r.tasks) {
    auto it = std::find_if(rows.begin(), rows.end(),
                           [&](const LanguageRow& x) { return x.language == t.language && x.direction == t.direction; });
    if (it == rows.end()) {
      rows.push_back({t.language, t.direction, 0, {}, {}});
      it = rows.end() - 1;
    }
    ++it->tasks;
    add_into(it->before, t.before);
    add_into(it->after, t.after);
  }
  for (auto& row : rows) divide(row.before, double(row.tasks)), divide(row.after, double(row.tasks));
  return rows;
}

std::vector<LanguageRow> direction_averages(const std::vector<LanguageRow>& rows) {
  std::vector<LanguageRow> avg;
  std::vector<int64_t> langs;
  for (const auto& row : rows) {
    auto it = std::find_if(avg.begin(), avg.end(), [&](const LanguageRow& x) { return x.direction == row.direction; });
    if (it == avg.end()) {
      avg.push_back({"average", row.direction, 0, {}, {}});
      langs.push_back(0);
      it = avg.end() - 1;
    }
    ++langs[size_t(it - avg.begin())];
    it->tasks += row.tasks;
    add_into(it->before, row.before);
    add_into(it->after, row.after);
  }
  for (size_t i = 0; i < avg.size(); ++i) divide(avg[i].before, double(langs[i])), divide(avg[i].after, double(langs[i]));
  return avg;
}

std::string task_dataset(const TaskResult& t) {
  const std::string tail = "/" + t.language;
  if (t.name.size() > tail.size() && t.name.compare(t.name.size() - tail.size(), tail.size(), tail) == 0)
    return t.name.substr(0, t.name.size() - tail.size());
  return t.name;
}

FamilyView family_view(const EvalResults& r) {
  FamilyView v;
  if (std::none_of(r.tasks.begin(), r.tasks.end(), [](const TaskResult& t) { return t.direction == "xx->xx"; }))
    return v;
  // Only the translated tasks (query and candidates in one language): a cross-lingual task (xx->en, en->xx) has
  // its rows in the language and direction table, and would tilt a language's average and the English gap.
  const auto translated = [](const TaskResult& t) { return t.direction == "xx->xx"; };
  for (const auto& t : r.tasks)
    if (translated(t) && std::find(v.languages.begin(), v.languages.end(), t.language) == v.languages.end())
      v.languages.push_back(t.language);
  for (const auto& f : kTaskTypes)
    if (std::any_of(r.tasks.begin(), r.tasks.end(), [&](const TaskResult& t) { return translated(t) && t.task_type == f; }))
      v.families.push_back(f);
  const auto lang_at = [&](const std::string& l) {
    return size_t(std::find(v.languages.begin(), v.languages.end(), l) - v.languages.begin());
  };
  const auto fam_at = [&](const std::string& f) {
    return size_t(std::find(v.families.begin(), v.families.end(), f) - v.families.begin());
  };
  v.cells.assign(v.families.size(), std::vector<LanguageRow>(v.languages.size()));
  v.language_average.assign(v.languages.size(), {});
  for (size_t l = 0; l < v.languages.size(); ++l) v.language_average[l].language = v.languages[l];
  for (const auto& t : r.tasks) {
    if (!translated(t)) continue;
    LanguageRow& c = v.cells[fam_at(t.task_type)][lang_at(t.language)];
    LanguageRow& la = v.language_average[lang_at(t.language)];
    for (LanguageRow* row : {&c, &la}) {
      ++row->tasks;
      add_into(row->before, t.before);
      add_into(row->after, t.after);
    }
  }
  for (auto& row : v.language_average) divide(row.before, double(row.tasks)), divide(row.after, double(row.tasks));
  for (size_t f = 0; f < v.families.size(); ++f) {
    LanguageRow avg;
    avg.language = "average";
    avg.direction = v.families[f];
    int64_t langs = 0;
    for (LanguageRow& c : v.cells[f]) {
      c.direction = v.families[f];
      if (c.tasks == 0) continue;
      divide(c.before, double(c.tasks)), divide(c.after, double(c.tasks));
      ++langs, avg.tasks += c.tasks;
      add_into(avg.before, c.before);
      add_into(avg.after, c.after);
    }
    divide(avg.before, double(langs)), divide(avg.after, double(langs));
    v.family_average.push_back(avg);
  }
  // English against the others, each language's average over all its tasks.
  const size_t en = lang_at("en");
  if (en < v.languages.size() && v.languages.size() > 1) {
    v.has_gap = true;
    RankMetrics others_before, others_after;
    for (size_t l = 0; l < v.languages.size(); ++l)
      if (l != en) add_into(others_before, v.language_average[l].before), add_into(others_after, v.language_average[l].after);
    divide(others_before, double(v.languages.size() - 1)), divide(others_after, double(v.languages.size() - 1));
    v.gap_before = v.language_average[en].before, v.gap_after = v.language_average[en].after;
    v.gap_before.each([&](const char* n, double& x) { x -= metric_value(others_before, n); });
    v.gap_after.each([&](const char* n, double& x) { x -= metric_value(others_after, n); });
  }
  return v;
}

json results_json(const EvalResults& r) {
  json j = {{"format", kResultsFormatName},
            {"format_version", kResultsFormatVersion},
            {"model", r.model},
            {"adapter", r.adapter.empty() ? json(nullptr) : json(r.adapter)},
            {"benchmark", r.benchmark},
            {"benchmark_name", r.benchmark_name},
            {"arch", r.arch},
            {"dim", r.dim},
            {"columns", r.has_after ? json{"before", "after"} : json{"before"}},
            {"unique_texts", r.unique_texts},
            {"unique_images", r.unique_images},
            {"embed_seconds", r.embed_seconds},
            {"notes", r.notes}};
  json tasks = json::array();
  for (const auto& t : r.tasks) {
    json tj = {{"name", t.name},           {"language", t.language}, {"direction", t.direction},
               {"task_type", t.task_type}, {"queries", t.queries},   {"candidates", t.candidates}};
    tj.update(before_after(t.before, t.after, r.has_after));
    tasks.push_back(tj);
  }
  j["tasks"] = tasks;
  const auto rows = language_rows(r);
  json langs = json::object();
  for (const auto& row : rows) {
    json e = before_after(row.before, row.after, r.has_after);
    e["tasks"] = row.tasks;
    langs[row.language][row.direction] = e;
  }
  j["languages"] = langs;
  json avgs = json::object();
  for (const auto& a : direction_averages(rows)) {
    json e = before_after(a.before, a.after, r.has_after);
    int64_t n = 0;
    for (const auto& row : rows) n += row.direction == a.direction;
    e["languages"] = n;
    avgs[a.direction] = e;
  }
  j["averages"] = avgs;
  if (const FamilyView v = family_view(r); !v.languages.empty()) {
    json fams = json::object();
    for (size_t f = 0; f < v.families.size(); ++f) {
      json fj = json::object();
      for (size_t l = 0; l < v.languages.size(); ++l) {
        const LanguageRow& c = v.cells[f][l];
        if (c.tasks == 0) continue;
        json e = before_after(c.before, c.after, r.has_after);
        e["tasks"] = c.tasks;
        fj[v.languages[l]] = e;
      }
      json a = before_after(v.family_average[f].before, v.family_average[f].after, r.has_after);
      a["tasks"] = v.family_average[f].tasks;
      fj["average"] = a;
      fams[v.families[f]] = fj;
    }
    j["families"] = fams;
    json la = json::object();
    for (const auto& row : v.language_average) {
      json e = before_after(row.before, row.after, r.has_after);
      e["tasks"] = row.tasks;
      la[row.language] = e;
    }
    j["language_averages"] = la;
    if (v.has_gap) {
      json g = {{"before", metrics_json(v.gap_before)}};
      if (r.has_after) g["after"] = metrics_json(v.gap_after);
      j["english_gap"] = g;
    }
  }
  j["english"] = {{"texts", r.english_texts},
                  {"cosine", r.english_cosine ? json(*r.english_cosine) : json(nullptr)}};
  return j;
}

namespace {

// The paper's tables: P@1 per task x language, per family x language with the averages, and the gap.
std::string family_markdown(const EvalResults& r, const FamilyView& v) {
  const auto p1 = [&](const RankMetrics& b, const RankMetrics& a) { return cell(b.p_at_1, a.p_at_1, r.has_after); };
  std::string head, rule;
  for (const auto& l : v.languages) head += " " + l + " |", rule += "---|";
  std::string s = "## P@1 per task and language\n\n| task | family |" + head + "\n|---|---|" + rule + "\n";
  std::vector<std::string> datasets;
  for (const auto& t : r.tasks)
    if (t.direction == "xx->xx" && std::find(datasets.begin(), datasets.end(), task_dataset(t)) == datasets.end())
      datasets.push_back(task_dataset(t));
  for (const auto& d : datasets) {
    std::string family, cells;
    for (const auto& l : v.languages) {
      const auto it = std::find_if(r.tasks.begin(), r.tasks.end(),
                                   [&](const TaskResult& t) {
                                     return t.direction == "xx->xx" && task_dataset(t) == d && t.language == l;
                                   });
      cells += " " + (it == r.tasks.end() ? std::string("–") : p1(it->before, it->after)) + " |";
      if (it != r.tasks.end()) family = it->task_type;
    }
    s += fmt::format("| {} | {} |{}\n", d, family, cells);
  }
  s += "\n## P@1 per task family and language (mean over the tasks)\n\n| family |" + head + " average |\n|---|" + rule +
       "---|\n";
  for (size_t f = 0; f < v.families.size(); ++f) {
    s += "| " + v.families[f] + " |";
    for (const LanguageRow& c : v.cells[f]) s += " " + (c.tasks ? p1(c.before, c.after) : std::string("–")) + " |";
    s += " " + p1(v.family_average[f].before, v.family_average[f].after) + " |\n";
  }
  s += "| **all tasks** |";
  for (const LanguageRow& la : v.language_average) s += " " + p1(la.before, la.after) + " |";
  s += " |\n\n";
  if (v.has_gap) {
    const auto pts = [](double x) { return fmt::format("{:+.1f}", 100 * x); };
    s += r.has_after ? fmt::format("English minus the mean of the other languages (P@1, points): before {}, after {}\n\n",
                                   pts(v.gap_before.p_at_1), pts(v.gap_after.p_at_1))
                     : fmt::format("English minus the mean of the other languages (P@1, points): {}\n\n",
                                   pts(v.gap_before.p_at_1));
  }
  return s;
}

}  // namespace

std::string results_markdown(const EvalResults& r) {
  std::string s = fmt::format("# Evaluation: {}\n\n", r.benchmark_name);
  s += fmt::format("- model: `{}` ({}, dim {})\n", r.model, r.arch, r.dim);
  s += fmt::format("- adapter: {}\n", r.adapter.empty() ? "none" : "`" + r.adapter + "`");
  s += fmt::format("- benchmark: `{}` ({} tasks, {} distinct items{})\n\n", r.benchmark, r.tasks.size(), r.unique_texts,
                   r.unique_images > 0 ? fmt::format(", {} with an image", r.unique_images) : "");
  if (r.has_after) {
    s += "Percent (MRR x 100). before = the base model (the teacher), after = the base model with the adapter "
         "(the student); the gain is in points.\n\n";
    s += "| language | direction | P@1 before → after (gain) | R@5 before → after (gain) | MRR before → after (gain) |\n";
  } else {
    s += "Percent (MRR x 100), the base model.\n\n";
    s += "| language | direction | P@1 | R@5 | MRR |\n";
  }
  s += "|---|---|---|---|---|\n";
  const auto rows = language_rows(r);
  for (const auto& row : rows) s += table_row(row.language, direction_label(row.language, row.direction), row, r.has_after);
  for (const auto& a : direction_averages(rows)) s += table_row("average", direction_label("xx", a.direction), a, r.has_after);
  s += "\n";
  if (const FamilyView v = family_view(r); !v.languages.empty()) s += family_markdown(r, v);
  if (r.english_cosine)
    s += fmt::format("English preservation: mean cosine(student, teacher) over {} held-out English texts = {:.4f}\n",
                     r.english_texts, *r.english_cosine);
  else if (r.english_texts > 0)
    s += "English preservation: no adapter, nothing to compare with the teacher.\n";
  if (!r.notes.empty()) {
    s += "\nNot measured:\n\n";
    for (const auto& n : r.notes) s += "- " + n + "\n";
  }
  return s;
}

std::string p_at_1_chart(const EvalResults& r) {
  const auto rows = language_rows(r);
  std::vector<std::string> groups;
  BarSeries before{"before", {}}, after{"after", {}};
  for (const auto& row : rows) {
    groups.push_back(direction_label(row.language, row.direction));
    before.values.push_back(100 * row.before.p_at_1);
    after.values.push_back(100 * row.after.p_at_1);
  }
  std::vector<BarSeries> series = {before};
  if (r.has_after) series.push_back(after);
  return svg_grouped_bars("Precision@1: " + r.benchmark_name, groups, series, "P@1 (%)", 100);
}

std::string family_chart(const EvalResults& r) {
  const FamilyView v = family_view(r);
  if (v.languages.empty()) return "";
  BarSeries before{"before", {}}, after{"after", {}};
  for (const auto& a : v.family_average) {
    before.values.push_back(100 * a.before.p_at_1);
    after.values.push_back(100 * a.after.p_at_1);
  }
  std::vector<BarSeries> series = {before};
  if (r.has_after) series.push_back(after);
  return svg_grouped_bars("Precision@1 per task family: " + r.benchmark_name, v.families, series, "P@1 (%)", 100);
}

std::string loss_chart(const std::string& path) {
  require_regular_file(path, "the training metrics (--train-dir must be a training output_dir)");
  std::ifstream f(path);
  XV_CHECK(f.good(), "{}: cannot open the training metrics (--train-dir must be a training output_dir)", path);
  LineSeries loss{"loss", {}, {}}, en{"loss_en", {}, {}}, xx{"loss_xx", {}, {}};
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", where, e.what());
    }
    XV_CHECK(j.is_object(), "{}: each line must be a JSON object", where);
    XV_CHECK(j.contains("step") && j["step"].is_number(), "{}: missing number field 'step'", where);
    XV_CHECK(j.contains("loss"), "{}: missing field 'loss'", where);
    const double step = j["step"].get<double>();
    for (LineSeries* s : {&loss, &en, &xx}) {
      s->x.push_back(step);
      s->y.push_back(number_or_nan(j, s->name.c_str(), where));
    }
  }
  XV_CHECK(!loss.x.empty(), "{}: no logged steps", path);
  return svg_lines("Training loss", {loss, en, xx}, "step", "MSE");
}

std::string write_report(const EvalResults& r, const std::string& out_dir, const std::string& train_dir) {
  // The loss chart first: a bad --train-dir fails before anything is written.
  std::string loss_svg;
  if (!train_dir.empty()) loss_svg = loss_chart((fs::path(train_dir) / "metrics.jsonl").string());
  fs::create_directories(out_dir);
  const std::string md = results_markdown(r);
  write_file_atomic((fs::path(out_dir) / "results.json").string(),
                    results_json(r).dump(2, ' ', false, json::error_handler_t::replace) + "\n");
  write_file_atomic((fs::path(out_dir) / "results.md").string(), md);
  write_file_atomic((fs::path(out_dir) / "p_at_1.svg").string(), p_at_1_chart(r));
  if (const std::string fam = family_chart(r); !fam.empty())
    write_file_atomic((fs::path(out_dir) / "p_at_1_families.svg").string(), fam);
  if (!loss_svg.empty()) write_file_atomic((fs::path(out_dir) / "loss.svg").string(), loss_svg);
  return md;
}

}  // namespace xv
