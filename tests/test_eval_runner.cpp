// The evaluation runner and report end to end on the tiny BERT with tests/fixtures/eval/tiny_benchmark:
//   before: the gold ranks of sentence-transformers' embeddings (tiny_expected.json, numpy) and of an
//           independent computation here (Embedder, stable sort of dot products);
//   after:  the gold ranks of PEFT's embeddings with tests/fixtures/peft/tiny_bert_adapter (fr->en), and of
//           the Embedder on the merged model for every task; the English cosine from PEFT's and the
//           Embedder's embeddings (1e-5);
//   report: results.json fields and numbers, results.md rows equal to them, well-formed SVGs;
//   errors: texts the model cannot embed, and images for a text-only model, name file:line; a bad metrics.jsonl
//           names file:line.
// Scores in tiny_expected.json keep a margin of 2e-4 around every gold, far above the float noise between
// implementations (about 1e-6), so ranks compare exactly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "models/backbones.h"
#include "models/embedder.h"
#include "core/error.h"
#include "core/file_util.h"
#include "models/kd/kd_model.h"
#include "core/npy.h"
#include "train/train_config.h"
#include "eval/benchmark.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "eval/svg_chart.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const std::string kFix = XV_FIXTURES;
const std::string kModel = kFix + "/models/tiny_bert";
const std::string kAdapter = kFix + "/peft/tiny_bert_adapter";
const std::string kBench = kFix + "/eval/tiny_benchmark";

std::string tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("xv_eval_runner_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// Unit rows of embeddings (N, D) in double.
std::vector<std::vector<double>> unit_rows(const xv::Tensor& e) {
  std::vector<std::vector<double>> out(size_t(e.dim(0)), std::vector<double>(size_t(e.dim(1))));
  for (int64_t i = 0; i < e.dim(0); ++i) {
    double s = 0;
    for (int64_t d = 0; d < e.dim(1); ++d) s += double(e.at(int64_t(size_t(i * e.dim(1) + d)))) * e.at(int64_t(size_t(i * e.dim(1) + d)));
    for (int64_t d = 0; d < e.dim(1); ++d) out[size_t(i)][size_t(d)] = e.at(int64_t(size_t(i * e.dim(1) + d))) / std::sqrt(s);
  }
  return out;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

// Gold ranks of one task with an independent pipeline: the Embedder's embeddings of every text (one per
// distinct text: the same text must score the same, which makes the planted duplicate an exact tie), dot
// products, a stable descending sort (the gold, first, wins ties), the gold's position.
std::vector<int64_t> embedder_ranks(const xv::Embedder& emb, const xv::BenchmarkTask& t) {
  std::vector<int64_t> ranks;
  xv::EmbedOptions o;
  o.normalize = true;
  for (const auto& q : t.queries) {
    std::map<std::string, size_t> row;
    std::vector<xv::EmbedItem> items;
    for (const std::string* text : {&q.text})
      if (row.emplace(*text, items.size()).second) items.push_back({*text, ""});
    for (const auto& c : q.candidates)
      if (row.emplace(c, items.size()).second) items.push_back({c, ""});
    const auto u = unit_rows(emb.embed(items, o));
    std::vector<double> s;
    for (const auto& c : q.candidates) s.push_back(dot(u[row.at(q.text)], u[row.at(c)]));
    std::vector<size_t> order(s.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s[a] > s[b]; });
    ranks.push_back(int64_t(std::find(order.begin(), order.end(), size_t{0}) - order.begin()) + 1);
  }
  return ranks;
}

// Evaluations shared by the tests (each costs a few hundred forward passes of the tiny model).
struct Shared {
  xv::Benchmark bench;
  json expected;
  xv::EvalResults base, adapted;
  std::string merged;  // the model with the adapter merged, for the Embedder
};
const Shared& shared() {
  static const Shared s = [] {
    Shared s;
    s.bench = xv::read_benchmark(kBench);
    s.expected = json::parse(xv::read_file(kFix + "/eval/tiny_expected.json"))["tasks"];
    xv::EvalRunOptions o;
    o.batch_size = 7;  // batches that cut across tasks and lengths
    s.base = xv::evaluate(kModel, "", s.bench, o);
    s.adapted = xv::evaluate(kModel, kAdapter, s.bench, o);
    s.merged = tmp_dir("merged");
    xv::LoraConfig lc;
    lc.targets = xv::default_lora_targets("bert");
    auto m = xv::KdModel::load(kModel, "lora", lc, 0);
    m->load_adapter(kAdapter);
    m->save_merged(s.merged);
    return s;
  }();
  return s;
}

// P@1, R@5 and MRR by hand from ranks.
void expect_metrics(const xv::RankMetrics& m, const std::vector<int64_t>& ranks) {
  double p1 = 0, r5 = 0, mrr = 0;
  for (const int64_t r : ranks) p1 += r == 1 ? 1 : 0, r5 += r <= 5 ? 1 : 0, mrr += 1.0 / double(r);
  const double n = double(ranks.size());
  EXPECT_EQ(m.queries, int64_t(ranks.size()));
  EXPECT_NEAR(m.p_at_1, p1 / n, 1e-12);
  EXPECT_NEAR(m.r_at_5, r5 / n, 1e-12);
  EXPECT_NEAR(m.mrr, mrr / n, 1e-12);
}

TEST(EvalRunner, BeforeIsTheBaseModel) {
  const Shared& s = shared();
  const xv::EvalResults& r = s.base;
  EXPECT_FALSE(r.has_after);
  EXPECT_FALSE(r.english_cosine.has_value());
  EXPECT_EQ(r.arch, "bert");
  EXPECT_EQ(r.dim, 64);
  ASSERT_EQ(r.tasks.size(), 5u);
  auto emb = xv::Embedder::load(kModel);
  for (size_t t = 0; t < r.tasks.size(); ++t) {
    SCOPED_TRACE(r.tasks[t].name);
    EXPECT_EQ(r.tasks[t].name, s.bench.tasks[t].name);
    EXPECT_TRUE(r.tasks[t].ranks_after.empty());
    EXPECT_EQ(r.tasks[t].ranks_before, embedder_ranks(*emb, s.bench.tasks[t]));
    if (s.expected[r.tasks[t].name].contains("before")) {
      EXPECT_EQ(r.tasks[t].ranks_before, s.expected[r.tasks[t].name]["before"].get<std::vector<int64_t>>());
    }
    expect_metrics(r.tasks[t].before, r.tasks[t].ranks_before);
  }
  // The planted exact tie (de->en, first query: the gold's text twice) is won by the gold, so no other copy
  // can outrank it: the rank equals the independent stable sort's, checked above.
  // The distinct texts: every query and candidate text of the fixture, and the English texts, once.
  std::set<std::string> texts(s.bench.english.begin(), s.bench.english.end());
  for (const auto& t : s.bench.tasks)
    for (const auto& q : t.queries) {
      texts.insert(q.text);
      texts.insert(q.candidates.begin(), q.candidates.end());
    }
  EXPECT_EQ(r.unique_texts, int64_t(texts.size()));
}

TEST(EvalRunner, AfterIsTheAdaptedModel) {
  const Shared& s = shared();
  const xv::EvalResults& r = s.adapted;
  ASSERT_TRUE(r.has_after);
  auto merged = xv::Embedder::load(s.merged);
  bool moved = false;
  for (size_t t = 0; t < r.tasks.size(); ++t) {
    SCOPED_TRACE(r.tasks[t].name);
    EXPECT_EQ(r.tasks[t].ranks_before, s.base.tasks[t].ranks_before);  // the adapter does not touch the teacher
    EXPECT_EQ(r.tasks[t].ranks_after, embedder_ranks(*merged, s.bench.tasks[t]));
    if (s.expected[r.tasks[t].name].contains("after")) {
      EXPECT_EQ(r.tasks[t].ranks_after, s.expected[r.tasks[t].name]["after"].get<std::vector<int64_t>>());
    }
    expect_metrics(r.tasks[t].after, r.tasks[t].ranks_after);
    moved = moved || r.tasks[t].ranks_after != r.tasks[t].ranks_before;
  }
  EXPECT_TRUE(moved) << "the adapter changed no rank: the 'after' column would be blind";

  // English cosine: PEFT's student embeddings of english.jsonl (the fixture sentences, in order) against the
  // Embedder's base-model embeddings.
  const auto student = unit_rows(xv::read_npy(kFix + "/peft/peft_embeddings.npy"));
  auto base = xv::Embedder::load(kModel);
  std::vector<xv::EmbedItem> items;
  for (const auto& t : s.bench.english) items.push_back({t, ""});
  const auto teacher = unit_rows(base->embed(items, {}));
  ASSERT_EQ(student.size(), teacher.size());
  double sum = 0;
  for (size_t i = 0; i < student.size(); ++i) sum += dot(student[i], teacher[i]);
  ASSERT_TRUE(r.english_cosine.has_value());
  EXPECT_EQ(r.english_texts, 10);
  EXPECT_NEAR(*r.english_cosine, sum / double(student.size()), 1e-5);
  EXPECT_LT(*r.english_cosine, 0.9999);  // the adapter moved English too: the check can see a difference
}

// Every tag opened is closed in order; entities are the five XML ones; the document is one <svg> element.
void expect_well_formed_svg(const std::string& svg) {
  ASSERT_EQ(svg.rfind("<svg", 0), 0u) << svg.substr(0, 80);
  std::vector<std::string> stack;
  size_t i = 0;
  int roots = 0;
  while ((i = svg.find('<', i)) != std::string::npos) {
    const size_t end = svg.find('>', i);
    ASSERT_NE(end, std::string::npos) << "unterminated tag at " << i;
    std::string tag = svg.substr(i + 1, end - i - 1);
    ASSERT_EQ(tag.find('<'), std::string::npos) << "'<' inside a tag at " << i;
    if (tag[0] == '/') {
      ASSERT_FALSE(stack.empty()) << "closing </" << tag << "> with nothing open";
      EXPECT_EQ(stack.back(), tag.substr(1));
      stack.pop_back();
    } else if (tag.back() != '/') {
      if (stack.empty()) ++roots;
      stack.push_back(tag.substr(0, tag.find_first_of(" \n")));
    } else if (stack.empty()) {
      ++roots;
    }
    i = end + 1;
  }
  EXPECT_TRUE(stack.empty()) << "unclosed <" << (stack.empty() ? "" : stack.back()) << ">";
  EXPECT_EQ(roots, 1);
  for (size_t a = svg.find('&'); a != std::string::npos; a = svg.find('&', a + 1)) {
    const std::string rest = svg.substr(a, 6);
    EXPECT_TRUE(rest.rfind("&amp;", 0) == 0 || rest.rfind("&lt;", 0) == 0 || rest.rfind("&gt;", 0) == 0 ||
                rest.rfind("&quot;", 0) == 0 || rest.rfind("&apos;", 0) == 0)
        << "bare '&' at " << a;
  }
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + 1)) ++n;
  return n;
}

std::string pct(double v) { return fmt::format("{:.1f}", 100 * v); }

TEST(EvalReport, FilesAgreeWithTheResults) {
  const Shared& s = shared();
  const std::string d = tmp_dir("report");
  // A training run's metrics.jsonl with the fields the trainer logs (docs/config.md).
  fs::create_directories(d + "/run");
  {
    std::ofstream f(d + "/run/metrics.jsonl");
    for (int step = 1; step <= 12; ++step)
      f << json{{"step", step}, {"epoch", step / 12.0}, {"loss", 1.0 / step}, {"loss_en", 0.4 / step},
                {"loss_xx", 1.6 / step}, {"lr", 1e-3}, {"grad_norm", 0.5}}
               .dump()
        << "\n";
  }
  const std::string md = xv::write_report(s.adapted, d + "/out", d + "/run");
  for (const char* f : {"results.json", "results.md", "p_at_1.svg", "loss.svg"})
    EXPECT_TRUE(fs::is_regular_file(d + "/out/" + f)) << f;
  EXPECT_EQ(xv::read_file(d + "/out/results.md"), md);

  const json j = json::parse(xv::read_file(d + "/out/results.json"));
  EXPECT_EQ(j["format"], "xvlm2vec-eval-results");
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["model"], kModel);
  EXPECT_EQ(j["adapter"], kAdapter);
  EXPECT_EQ(j["benchmark"], kBench);
  EXPECT_EQ(j["columns"], json({"before", "after"}));
  ASSERT_EQ(j["tasks"].size(), 5u);
  for (size_t t = 0; t < 5; ++t) {
    const auto& tj = j["tasks"][t];
    const auto& tr = s.adapted.tasks[t];
    EXPECT_EQ(tj["name"], tr.name);
    EXPECT_EQ(tj["queries"], tr.queries);
    EXPECT_EQ(tj["candidates"], s.bench.tasks[t].num_candidates);
    EXPECT_DOUBLE_EQ(tj["before"]["p_at_1"].get<double>(), tr.before.p_at_1);
    EXPECT_DOUBLE_EQ(tj["after"]["mrr"].get<double>(), tr.after.mrr);
    EXPECT_NEAR(tj["gain"]["r_at_5"].get<double>(), tr.after.r_at_5 - tr.before.r_at_5, 1e-12);
    // One task per (language, direction) here: the per-language entry is the task's.
    EXPECT_DOUBLE_EQ(j["languages"][tr.language][tr.direction]["after"]["p_at_1"].get<double>(), tr.after.p_at_1);
  }
  // Averages over languages: xx->en has de, es, fr; en->xx has de, es.
  auto mean_of = [&](const std::vector<size_t>& ts, const char* col, const char* m) {
    double sum = 0;
    for (const size_t t : ts) sum += j["tasks"][t][col][m].get<double>();
    return sum / double(ts.size());
  };
  EXPECT_EQ(j["averages"]["xx->en"]["languages"], 3);
  EXPECT_EQ(j["averages"]["en->xx"]["languages"], 2);
  EXPECT_NEAR(j["averages"]["xx->en"]["after"]["p_at_1"].get<double>(), mean_of({0, 2, 4}, "after", "p_at_1"), 1e-12);
  EXPECT_NEAR(j["averages"]["en->xx"]["before"]["mrr"].get<double>(), mean_of({1, 3}, "before", "mrr"), 1e-12);
  EXPECT_NEAR(j["english"]["cosine"].get<double>(), *s.adapted.english_cosine, 1e-12);
  EXPECT_EQ(j["english"]["texts"], 10);

  // results.md: one row per language x direction and one per direction's average, each cell
  // "before → after (gain)" with the JSON's numbers in percent.
  const std::regex row_re(R"(\| ([^|]+) \| ([^|]+) \| ([-0-9.]+) → ([-0-9.]+) \(([-+0-9.]+)\) \| ([-0-9.]+) → ([-0-9.]+) \(([-+0-9.]+)\) \| ([-0-9.]+) → ([-0-9.]+) \(([-+0-9.]+)\) \|)");
  std::map<std::string, std::vector<std::string>> rows;
  std::istringstream in(md);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, row_re)) rows[m[1].str() + " " + m[2].str()] = {m[3], m[4], m[5], m[6], m[7], m[9], m[10]};
  }
  ASSERT_EQ(rows.size(), 7u) << md;
  auto check_row = [&](const std::string& key, const json& e) {
    SCOPED_TRACE(key);
    ASSERT_TRUE(rows.count(key)) << md;
    const auto& v = rows[key];
    EXPECT_EQ(v[0], pct(e["before"]["p_at_1"].get<double>()));
    EXPECT_EQ(v[1], pct(e["after"]["p_at_1"].get<double>()));
    // The gain in points with one decimal and a sign; zero is "+0.0".
    const double gain = 100 * (e["after"]["p_at_1"].get<double>() - e["before"]["p_at_1"].get<double>());
    EXPECT_EQ(v[2], std::abs(gain) < 0.05 ? "+0.0" : fmt::format("{:+.1f}", gain));
    EXPECT_EQ(v[3], pct(e["before"]["r_at_5"].get<double>()));
    EXPECT_EQ(v[4], pct(e["after"]["r_at_5"].get<double>()));
    EXPECT_EQ(v[5], pct(e["before"]["mrr"].get<double>()));
    EXPECT_EQ(v[6], pct(e["after"]["mrr"].get<double>()));
  };
  check_row("de de→en", j["languages"]["de"]["xx->en"]);
  check_row("de en→de", j["languages"]["de"]["en->xx"]);
  check_row("fr fr→en", j["languages"]["fr"]["xx->en"]);
  check_row("average xx→en", j["averages"]["xx->en"]);
  check_row("average en→xx", j["averages"]["en->xx"]);
  EXPECT_NE(md.find(fmt::format("= {:.4f}", j["english"]["cosine"].get<double>())), std::string::npos) << md;

  const std::string bars = xv::read_file(d + "/out/p_at_1.svg");
  expect_well_formed_svg(bars);
  EXPECT_EQ(count(bars, "<rect"), 1 + 2 * 5 + 2u);  // background, before and after per row, legend keys
  EXPECT_NE(bars.find(">de→en<"), std::string::npos);
  const std::string loss = xv::read_file(d + "/out/loss.svg");
  expect_well_formed_svg(loss);
  EXPECT_EQ(count(loss, "<polyline"), 3u);
  for (const char* name : {">loss<", ">loss_en<", ">loss_xx<", ">step<"}) EXPECT_NE(loss.find(name), std::string::npos) << name;
  fs::remove_all(d);
}

TEST(EvalReport, WithoutAdapterOneColumn) {
  const Shared& s = shared();
  const std::string d = tmp_dir("report1");
  const std::string md = xv::write_report(s.base, d, "");
  const json j = json::parse(xv::read_file(d + "/results.json"));
  EXPECT_TRUE(j["adapter"].is_null());
  EXPECT_EQ(j["columns"], json({"before"}));
  EXPECT_FALSE(j["tasks"][0].contains("after"));
  EXPECT_TRUE(j["english"]["cosine"].is_null());
  EXPECT_EQ(md.find("→ "), std::string::npos) << md;  // no "before → after" cells
  EXPECT_NE(md.find(fmt::format("| de | de→en | {} | {} | {} |", pct(s.base.tasks[0].before.p_at_1),
                                pct(s.base.tasks[0].before.r_at_5), pct(s.base.tasks[0].before.mrr))),
            std::string::npos)
      << md;
  EXPECT_FALSE(fs::exists(d + "/loss.svg"));
  const std::string bars = xv::read_file(d + "/p_at_1.svg");
  expect_well_formed_svg(bars);
  EXPECT_EQ(count(bars, "<rect"), 1 + 5 + 1u);
  fs::remove_all(d);
}

TEST(EvalReport, SvgEscapesLabels) {
  const std::string svg = xv::svg_grouped_bars("a <b> & \"c\"", {"x<y", "p&q"}, {{"s'1", {10, 20}}}, "y & z");
  expect_well_formed_svg(svg);
  EXPECT_NE(svg.find("x&lt;y"), std::string::npos);
  const std::string lines = xv::svg_lines("t&", {{"n<", {1, 2, 3}, {0.5, std::nan(""), 0.25}}}, "x", "y");
  expect_well_formed_svg(lines);
  const auto ticks = xv::nice_ticks(0, 0.93);
  ASSERT_FALSE(ticks.empty());
  EXPECT_DOUBLE_EQ(ticks.front(), 0);
  EXPECT_NEAR(ticks.back(), 1.0, 1e-12);
  EXPECT_NEAR(ticks[1] - ticks[0], 0.2, 1e-12);
}

TEST(EvalErrors, NameTheFileAndLine) {
  const std::string d = tmp_dir("errors");
  // A metrics.jsonl with a broken line.
  fs::create_directories(d + "/run");
  std::ofstream(d + "/run/metrics.jsonl") << "{\"step\": 1, \"loss\": 0.5}\n{\"step\": 2, \"loss\"\n";
  try {
    xv::write_report(shared().base, d + "/out", d + "/run");
    ADD_FAILURE() << "a broken metrics.jsonl was accepted";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("metrics.jsonl:2: not valid JSON"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(d + "/out/results.json"));  // nothing written before the failure

  // A text longer than the model takes (128 tokens) names where it is.
  xv::Benchmark b = xv::read_benchmark(kBench);
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "word ";
  b.tasks[1].queries[2].candidates[5] = long_text;
  xv::write_benchmark(d + "/long", b);
  try {
    xv::evaluate(kModel, "", xv::read_benchmark(d + "/long"), {});
    ADD_FAILURE() << "an over-long text was accepted";
  } catch (const xv::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("en_to_de.jsonl:3 (tgt_text entry 5): the teacher cannot embed this text"), std::string::npos) << msg;
  }

  // Images need a model with an image path: the error names the first query with one and its task.
  xv::Benchmark img = xv::read_benchmark(kBench);
  std::ofstream(d + "/pic.png") << "x";
  img.tasks[0].queries[1].image = d + "/pic.png";
  try {
    xv::evaluate(kModel, "", img, {});
    ADD_FAILURE() << "an image was accepted by a text-only model";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("de_to_en.jsonl:2: task 'de->en' has images, but the bert model"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(xv::evaluate(kModel, d + "/no_adapter", b, {}), xv::Error);
  fs::remove_all(d);
}

}  // namespace
