// `eval make-multimodal` (eval/make_multimodal.h) on a prepared folder written here, in the layout
// tools/prepare_multimodal.py writes (prepared.json + one JSONL of items per source + images):
//   - the split: a fixed function of the unit, about 30% held out, never mixing a unit's items, independent of
//     the seed; the held-out suite references only held-out images and the training suite only training ones;
//   - the tasks per source kind and language (classification, t2i/i2t retrieval, grounding within one map,
//     vqa in English only), the gold first, every candidate list of a task of one length, distinct candidates;
//   - one-to-one retrieval: a name shared by two items, or two items with the same image bytes, are left out;
//   - a language without names gets no task and a note; the same seed gives the same folder byte for byte;
//   - bad prepared data: errors naming the file, the line and the field.
// The suite is then evaluated end to end with the tiny Phi-3-vision: every family scored, the notes reported.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/file_util.h"
#include "eval/benchmark.h"
#include "eval/make_multimodal.h"
#include "eval/report.h"
#include "eval/runner.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
const std::string kFix = XV_FIXTURES;

struct Dir {
  fs::path p = fs::temp_directory_path() / ("xv_make_mm_" + std::to_string(::getpid()));
  Dir() {
    fs::remove_all(p);
    fs::create_directories(p / "data");
  }
  ~Dir() { fs::remove_all(p); }
};

// Unit names that land in the wanted split (the split is a function of the name alone).
std::vector<std::string> units(const std::string& prefix, const std::string& split, size_t n) {
  std::vector<std::string> u;
  for (int i = 0; u.size() < n; ++i)
    if (xv::multimodal_split(prefix + std::to_string(i)) == split) u.push_back(prefix + std::to_string(i));
  return u;
}

// The real fixture images, copied under new names (distinct bytes for distinct `which`).
const std::vector<std::string> kImages = {"landscape_300x200.png", "gray_97x61.png", "la_60x40.png",
                                          "interlaced_37x29.png",  "gray16_64x48.png", "rgba_130x110.png",
                                          "palette_100x80.png",    "tiny_50x30.png",  "square_256.png"};

struct Prepared {
  fs::path dir;
  json manifest = {{"format", "xvlm2vec-multimodal-data"}, {"format_version", 1}, {"sources", json::array()}};
  std::map<std::string, std::string> files;  // source file -> content

  std::string image(const std::string& rel, size_t which) {
    fs::create_directories((dir / rel).parent_path());
    fs::copy_file(fs::path(kFix) / "images" / kImages[which % kImages.size()], dir / rel,
                  fs::copy_options::overwrite_existing);
    return rel;
  }
  void source(json s, const std::vector<json>& items) {
    std::string text;
    for (const auto& it : items) text += it.dump() + "\n";
    files[s["file"].get<std::string>()] = text;
    manifest["sources"].push_back(std::move(s));
  }
  void write() {
    for (const auto& [f, t] : files) xv::write_file_atomic((dir / f).string(), t);
    xv::write_file_atomic((dir / "prepared.json").string(), manifest.dump());
  }
};

// A prepared folder with every kind: flags (with continents), stamps (one name shared, one image duplicated),
// maps (two maps of 4 regions in the held-out split), vqa; Spanish names only for some sources.
Prepared sample(const fs::path& dir) {
  Prepared p;
  p.dir = dir;
  std::vector<json> flags;
  const auto fu = units("flags/", "heldout", 6);
  const std::vector<std::string> cont_en = {"Europe", "Africa", "Asia"}, cont_it = {"Europa", "Africa", "Asia"};
  for (size_t i = 0; i < fu.size(); ++i)
    flags.push_back({{"id", fu[i]}, {"unit", fu[i]}, {"image", p.image(fu[i] + ".png", i)},
                     {"text", {{"en", "Country " + std::to_string(i)}, {"it", "Paese " + std::to_string(i)}}},
                     {"label", {{"en", cont_en[i % 3]}, {"it", cont_it[i % 3]}}}});
  for (const auto& u : units("flags/", "train", 3))
    flags.push_back({{"id", u}, {"image", p.image(u + ".png", 7)}, {"text", {{"en", "Train " + u}}},
                     {"label", {{"en", "Oceania"}, {"it", "Oceania"}}}});
  p.source({{"name", "flags"}, {"kind", "flags"}, {"file", "flags.jsonl"}, {"origin", "test"}}, flags);

  std::vector<json> stamps;
  const auto su = units("stamps/", "heldout", 5);
  for (size_t i = 0; i < su.size(); ++i)
    stamps.push_back({{"id", su[i]}, {"image", p.image(su[i] + ".png", i == 4 ? 0 : i)},  // 4 copies 0's bytes
                      {"text", {{"en", i == 3 ? "A cat." : "Stamp " + std::to_string(i)},
                                {"es", i == 2 ? "Un gato." : "Sello " + std::to_string(i)}}}});
  stamps.push_back({{"id", "stamps/extra"}, {"unit", su[3]}, {"image", p.image("stamps/extra.png", 5)},
                    {"text", {{"en", "A cat."}}}});  // shares su[3]'s English name: neither is usable in en
  p.source({{"name", "stamps"}, {"kind", "stamps"}, {"file", "stamps.jsonl"}}, stamps);

  std::vector<json> maps;
  const auto mu = units("maps/", "heldout", 2);
  for (size_t m = 0; m < mu.size(); ++m) {
    const std::string ctx = p.image(mu[m] + ".png", 8);
    for (int r = 0; r < 4; ++r) {
      json t = {{"en", "Region " + std::to_string(m) + std::to_string(r)}};
      if (r != 0) t["it"] = "Regione " + std::to_string(m) + std::to_string(r);
      maps.push_back({{"id", mu[m] + "/" + std::to_string(r)}, {"unit", mu[m]},
                      {"image", p.image(mu[m] + "/" + std::to_string(r) + ".png", size_t(m * 4 + r))},
                      {"context_image", ctx}, {"text", t}});
    }
  }
  p.source({{"name", "maps"}, {"kind", "maps"}, {"file", "maps.jsonl"}}, maps);

  std::vector<json> vqa;
  const auto vu = units("vqa/", "heldout", 3);
  for (size_t i = 0; i < vu.size(); ++i)
    vqa.push_back({{"id", vu[i]}, {"image", p.image(vu[i] + ".png", i + 2)},
                   {"qa", json::array({json::array({"what color is the shape?", i == 0 ? "red" : "blue"})})}});
  p.source({{"name", "vqa"}, {"kind", "vqa"}, {"file", "vqa.jsonl"}, {"answers", {"red", "blue", "circle"}}}, vqa);
  p.write();
  return p;
}

xv::MultimodalOptions options(const Dir& d, const std::string& out = "bench") {
  xv::MultimodalOptions o;
  o.data_dir = (d.p / "data").string();
  o.out_dir = (d.p / out).string();
  o.langs = {"en", "it", "es"};
  o.grounding_candidates = 3;
  o.queries = 100;
  return o;
}

const xv::BenchmarkTask* find_task(const xv::Benchmark& b, const std::string& name) {
  for (const auto& t : b.tasks)
    if (t.name == name) return &t;
  return nullptr;
}

TEST(MakeMultimodal, SplitIsAFixedFunctionOfTheUnit) {
  int64_t held = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string u = "emoji/" + std::to_string(i);
    const std::string s = xv::multimodal_split(u);
    ASSERT_TRUE(s == "heldout" || s == "train");
    EXPECT_EQ(s, xv::multimodal_split(u));
    held += s == "heldout";
  }
  EXPECT_NEAR(double(held) / 20000, xv::kHeldOutPercent / 100.0, 0.015);
}

TEST(MakeMultimodal, TasksPerKindAndLanguage) {
  Dir d;
  sample(d.p / "data");
  const xv::Benchmark b = xv::make_multimodal(options(d));
  std::set<std::string> names;
  for (const auto& t : b.tasks) names.insert(t.name);
  const std::set<std::string> want = {"flags-class/en", "flags-class/it", "flags-t2i/en", "flags-i2t/en",
                                      "flags-t2i/it",   "flags-i2t/it",   "stamps-t2i/en", "stamps-i2t/en",
                                      "stamps-t2i/es",  "stamps-i2t/es",  "maps-grounding/en", "maps-grounding/it",
                                      "vqa/en", "flags-names/it->en", "flags-names/en->it", "stamps-names/es->en",
                                      "stamps-names/en->es", "maps-names/it->en", "maps-names/en->it"};
  EXPECT_EQ(names, want);
  // The notes name every language left out, per source and family.
  const std::string notes = fmt::format("{}", fmt::join(b.notes, "\n"));
  EXPECT_NE(notes.find("flags (classification): es not measured"), std::string::npos) << notes;
  EXPECT_NE(notes.find("stamps (retrieval): it not measured"), std::string::npos) << notes;
  EXPECT_NE(notes.find("maps (grounding): es not measured"), std::string::npos) << notes;
  EXPECT_NE(notes.find("vqa (vqa): it, es not measured"), std::string::npos) << notes;

  // Classification: the image, its continent first, then every other continent of the source (training
  // items' classes included, so both splits rank the same classes).
  const auto* fc = find_task(b, "flags-class/it");
  ASSERT_NE(fc, nullptr);
  EXPECT_EQ(fc->queries.size(), 6u);
  for (const auto& q : fc->queries) {
    ASSERT_EQ(q.candidates.size(), 4u);
    EXPECT_EQ(std::set<std::string>(q.candidates.begin(), q.candidates.end()),
              (std::set<std::string>{"Europa", "Africa", "Asia", "Oceania"}));
    EXPECT_FALSE(q.image.empty());
    EXPECT_EQ(q.task_type, "classification");
    EXPECT_EQ(q.lang, "it");
  }
  // Retrieval t2i and i2t over the same pool: the gold is the query's own item, on the other side.
  const auto* t2i = find_task(b, "flags-t2i/it");
  const auto* i2t = find_task(b, "flags-i2t/it");
  ASSERT_TRUE(t2i && i2t);
  ASSERT_EQ(t2i->queries.size(), 6u);
  for (size_t q = 0; q < 6; ++q) {
    const std::string name = t2i->queries[q].text;  // "Paese k": the gold image is flags/<unit k>.png
    const auto& gold_img = t2i->queries[q].candidate_images[0];
    EXPECT_EQ(i2t->queries[q].image, gold_img);
    EXPECT_EQ(i2t->queries[q].candidates[0], name);
    EXPECT_EQ(t2i->queries[q].candidates.size(), 6u);
    const auto& imgs = t2i->queries[q].candidate_images;
    EXPECT_EQ(std::set<std::string>(imgs.begin(), imgs.end()).size(), 6u);
    EXPECT_EQ(std::set<std::string>(i2t->queries[q].candidates.begin(), i2t->queries[q].candidates.end()).size(), 6u);
  }
  EXPECT_NE(t2i->query_template.find("{text}"), std::string::npos);
  // One-to-one: in English "A cat." is two items' name and stamp 4 copies stamp 0's bytes, so stamps 0, 3, 4
  // and the extra item are out: 1 and 2 remain. In Spanish stamp 3's name is its own, 0 and 4 still share bytes.
  EXPECT_EQ(find_task(b, "stamps-t2i/en")->queries.size(), 2u);
  EXPECT_EQ(find_task(b, "stamps-t2i/es")->queries.size(), 3u);
  // Grounding: the map, the region's name, the region's crop first among crops of the same map; a region with no
  // Italian name is no Italian query.
  const auto* g = find_task(b, "maps-grounding/it");
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->queries.size(), 6u);
  for (const auto& q : g->queries) {
    ASSERT_EQ(q.candidate_images.size(), 3u);
    const std::string map = fs::path(q.image).stem().string();  // maps/<n>.png
    for (const auto& c : q.candidate_images) EXPECT_EQ(fs::path(c).parent_path().filename().string(), map);
    EXPECT_EQ(std::set<std::string>(q.candidate_images.begin(), q.candidate_images.end()).size(), 3u);
    EXPECT_EQ(q.text.rfind("Regione ", 0), 0u);
    EXPECT_EQ(q.text.back(), fs::path(q.candidate_images[0]).stem().string().back());
  }
  EXPECT_EQ(find_task(b, "maps-grounding/en")->queries.size(), 8u);
  // VQA: the question, its answer first, then the other answers.
  const auto* v = find_task(b, "vqa/en");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->queries.size(), 3u);
  for (const auto& q : v->queries) {
    EXPECT_EQ(q.text, "what color is the shape?");
    EXPECT_EQ(q.candidates.size(), 3u);
  }
  // English preservation: the split's English names.
  EXPECT_FALSE(b.english.empty());
}

// Text only (a model without an image path): the names, xx->en and en->xx over one pool; no image anywhere.
TEST(MakeMultimodal, TextOnlyNameTasks) {
  Dir d;
  sample(d.p / "data");
  xv::MultimodalOptions o = options(d);
  o.text_only = true;
  const xv::Benchmark b = xv::make_multimodal(o);
  std::set<std::string> names;
  for (const auto& t : b.tasks) {
    names.insert(t.name);
    for (const auto& q : t.queries) {
      EXPECT_TRUE(q.image.empty());
      EXPECT_TRUE(q.candidate_images.empty());
    }
  }
  EXPECT_EQ(names, (std::set<std::string>{"flags-names/it->en", "flags-names/en->it", "stamps-names/es->en",
                                          "stamps-names/en->es", "maps-names/it->en", "maps-names/en->it"}));
  // "Paese k" finds "Country k"; every query ranks the pool's 6 English names.
  const auto* t = find_task(b, "flags-names/it->en");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->direction, "xx->en");
  ASSERT_EQ(t->queries.size(), 6u);
  for (const auto& q : t->queries) {
    ASSERT_EQ(q.candidates.size(), 6u);
    EXPECT_EQ(q.text.substr(6), q.candidates[0].substr(8));  // "Paese k" / "Country k"
    EXPECT_EQ(std::set<std::string>(q.candidates.begin(), q.candidates.end()).size(), 6u);
  }
  // Stamps in Spanish: 5 items named in both; "A cat." is one item's English name among the items named in both.
  EXPECT_EQ(find_task(b, "stamps-names/en->es")->queries.size(), 5u);
  EXPECT_EQ(find_task(b, "maps-names/en->it")->queries.size(), 6u);
}

TEST(MakeMultimodal, SplitsAreDisjointAndTheSeedOnlyReorders) {
  Dir d;
  sample(d.p / "data");
  auto images_of = [](const xv::Benchmark& b) {
    std::set<std::string> s;
    for (const auto& t : b.tasks)
      for (const auto& q : t.queries) {
        if (!q.image.empty()) s.insert(fs::path(q.image).lexically_normal().string());
        for (const auto& c : q.candidate_images) s.insert(fs::path(c).lexically_normal().string());
      }
    return s;
  };
  xv::MultimodalOptions o = options(d);
  const xv::Benchmark held = xv::make_multimodal(o);
  o.split = "train";
  const xv::Benchmark train = xv::make_multimodal(o);
  ASSERT_NE(find_task(train, "flags-class/en"), nullptr);
  for (const auto& img : images_of(train)) EXPECT_FALSE(images_of(held).count(img)) << img;
  // The training suite's flags are the three training units (all "Oceania").
  for (const auto& q : find_task(train, "flags-class/en")->queries) EXPECT_EQ(q.candidates[0], "Oceania");

  // Same seed: byte-identical folders; another seed: the same items, in another order.
  o = options(d, "a");
  xv::write_benchmark(o.out_dir, xv::make_multimodal(o));
  o.out_dir = (d.p / "b").string();
  xv::write_benchmark(o.out_dir, xv::make_multimodal(o));
  for (const auto& e : fs::directory_iterator(d.p / "a")) {
    const std::string f = e.path().filename().string();
    EXPECT_EQ(xv::read_file(e.path().string()), xv::read_file((d.p / "b" / f).string())) << f;
  }
  o.seed = 7;
  const xv::Benchmark other = xv::make_multimodal(o);
  EXPECT_EQ(images_of(other), images_of(held));
  std::vector<std::string> q0, q7;
  for (const auto& q : find_task(held, "flags-t2i/en")->queries) q0.push_back(q.text);
  for (const auto& q : find_task(other, "flags-t2i/en")->queries) q7.push_back(q.text);
  EXPECT_NE(q0, q7);
  std::sort(q0.begin(), q0.end());
  std::sort(q7.begin(), q7.end());
  EXPECT_EQ(q0, q7);
  // Dropping a language leaves the others' tasks as they were.
  o = options(d);
  o.langs = {"it"};
  const xv::Benchmark it_only = xv::make_multimodal(o);
  const auto* a = find_task(it_only, "flags-t2i/it");
  const auto* b = find_task(held, "flags-t2i/it");
  ASSERT_TRUE(a && b);
  for (size_t i = 0; i < a->queries.size(); ++i)
    EXPECT_EQ(a->queries[i].candidate_images, b->queries[i].candidate_images);
}

void expect_error(const Dir& d, const std::string& want) {
  try {
    xv::make_multimodal(options(d));
    ADD_FAILURE() << "no error; expected: " << want;
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
  }
}

TEST(MakeMultimodal, BadPreparedDataIsNamed) {
  Dir d;
  expect_error(d, "prepared.json: not found");
  Prepared p = sample(d.p / "data");
  const std::string good = p.files["flags.jsonl"];
  auto with_flags = [&](const std::string& text) {
    xv::write_file_atomic((d.p / "data" / "flags.jsonl").string(), text);
  };
  auto line2 = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t nl = s.find('\n');
    const size_t at = s.find(from, nl);
    EXPECT_NE(at, std::string::npos);
    return s.replace(at, from.size(), to);
  };
  with_flags(line2("\"image\":\"", "\"image\":\"nothere/"));
  expect_error(d, "flags.jsonl:2: field 'image': image ");
  with_flags(line2("\"text\":{", "\"text\":{\"de\":7,"));
  expect_error(d, "flags.jsonl:2: field 'text.de' must be a non-empty string, found number");
  with_flags(good + good.substr(0, good.find('\n') + 1));
  expect_error(d, "field 'id': '");
  with_flags(good + "{\"id\": 3}\n");
  expect_error(d, "flags.jsonl:10: field 'id' must be a string, found number");
  with_flags(good + "not json\n");
  expect_error(d, "flags.jsonl:10: not valid JSON");
  with_flags(good);

  json m = p.manifest;
  m["sources"][0]["kind"] = "photos";
  xv::write_file_atomic((d.p / "data" / "prepared.json").string(), m.dump());
  expect_error(d, "prepared.json: sources[0]: field 'kind' is 'photos'; expected one of emoji, flags, stamps, maps, vqa");
  m = p.manifest;
  m["format_version"] = 2;
  xv::write_file_atomic((d.p / "data" / "prepared.json").string(), m.dump());
  expect_error(d, "field 'format_version' is 2; this build reads version 1");
  m = p.manifest;
  m["sources"][3]["answers"] = {"red", "green"};
  xv::write_file_atomic((d.p / "data" / "prepared.json").string(), m.dump());
  expect_error(d, "vqa.jsonl:2: field 'qa' entry 0: answer 'blue' is not one of the source's answers");
  m = p.manifest;
  m["sources"][2].erase("file");
  xv::write_file_atomic((d.p / "data" / "prepared.json").string(), m.dump());
  expect_error(d, "prepared.json: sources[2]: missing field 'file'");
}

// The suite end to end: written, read back, evaluated with the tiny Phi-3-vision (images through its processor),
// every family scored and the notes in the report.
TEST(MakeMultimodal, EvaluatedEndToEnd) {
  Dir d;
  sample(d.p / "data");
  xv::MultimodalOptions o = options(d);
  xv::write_benchmark(o.out_dir, xv::make_multimodal(o));
  const xv::Benchmark b = xv::read_benchmark(o.out_dir);
  const xv::EvalResults r = xv::evaluate(kFix + "/models/tiny_phi3v", "", b, {});
  std::set<std::string> families;
  for (const auto& t : r.tasks) {
    families.insert(t.task_type);
    EXPECT_GE(t.before.p_at_1, 0.0);
    EXPECT_LE(t.before.p_at_1, 1.0);
  }
  EXPECT_EQ(families, (std::set<std::string>{"classification", "retrieval", "grounding", "vqa"}));
  const std::string md = xv::results_markdown(r);
  EXPECT_NE(md.find("Not measured:"), std::string::npos);
  EXPECT_NE(md.find("vqa (vqa): it, es not measured"), std::string::npos) << md;
}

}  // namespace
