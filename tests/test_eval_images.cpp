// Evaluation with images on the tiny Phi-3-vision: queries and candidates that are images, images with text and
// text alone, through the model's own image path (models/embedder.h, itself golden against transformers).
//   - the gold ranks equal those of an independent computation here: every item embedded alone by the Embedder,
//     scores by dot product of unit rows, the gold's rank with ties in its favour (the runner never batches a
//     text with an image: Phi-3's su-scaled RoPE takes its factors from the batch's padded length);
//   - the images are seen: a query and its gold share text and image, distractors differ only by the image,
//     and their scores are strictly below the gold's;
//   - every distinct item is embedded once, keyed by content: the same image under a second path is one item;
//   - a task's query and target templates (its instructions) put the texts in place before embedding.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "eval/benchmark.h"
#include "eval/runner.h"
#include "models/embedder.h"

namespace {

namespace fs = std::filesystem;
const std::string kFix = XV_FIXTURES;
const std::string kModel = kFix + "/models/tiny_phi3v";

struct Dir {
  fs::path p = fs::temp_directory_path() / ("xv_eval_images_" + std::to_string(::getpid()));
  Dir() {
    fs::remove_all(p);
    fs::create_directories(p / "bench");
  }
  ~Dir() { fs::remove_all(p); }
};

xv::BenchmarkQuery query(std::string text, std::string image, std::vector<std::string> cands,
                         std::vector<std::string> cand_images, const std::string& lang, const std::string& type) {
  xv::BenchmarkQuery q;
  q.text = std::move(text);
  q.image = std::move(image);
  q.candidates = std::move(cands);
  q.candidate_images = std::move(cand_images);
  q.lang = lang;
  q.task_type = type;
  return q;
}

xv::BenchmarkTask task(const std::string& name, const std::string& lang, const std::string& type,
                       std::vector<xv::BenchmarkQuery> qs) {
  xv::BenchmarkTask t;
  t.name = name;
  t.file = name + ".jsonl";
  t.language = lang;
  t.direction = "xx->xx";
  t.task_type = type;
  t.queries = std::move(qs);
  return t;
}

// Gold rank of scores (gold at 0) with ties counted in the gold's favour.
int64_t rank_of_gold(const std::vector<double>& s) {
  int64_t r = 1;
  for (size_t i = 1; i < s.size(); ++i) r += s[i] > s[0];
  return r;
}

TEST(EvalImages, RanksMatchTheEmbedderItemByItem) {
  Dir d;
  const fs::path img = d.p / "bench" / "img";
  fs::create_directories(img);
  for (const char* f : {"tiny_50x30.png", "wide_800x96.png", "square_256.png", "landscape_300x200.png"})
    fs::copy_file(kFix + "/images/" + f, img / f);
  fs::copy_file(kFix + "/images/square_256.png", img / "same_as_square.png");  // one image, two paths
  const std::string rep = "<|image_1|>\nRappresenta l'immagine data";
  xv::Benchmark b;
  b.name = "images";
  b.tasks.push_back(task(
      "i2t", "it", "classification",
      {query(rep, "img/tiny_50x30.png", {"un gatto", "un cane", "una casa"}, {}, "it", "classification"),
       query(rep, "img/wide_800x96.png", {"un cane", "un gatto", "una casa"}, {}, "it", "classification")}));
  b.tasks.push_back(task(
      "t2i", "de", "retrieval",
      {query("ein Quadrat", "", {"", "", ""},
             {"img/square_256.png", "img/landscape_300x200.png", "img/tiny_50x30.png"}, "de", "retrieval"),
       query("eine Landschaft", "", {"", "", ""},
             {"img/landscape_300x200.png", "img/same_as_square.png", "img/wide_800x96.png"}, "de", "retrieval")}));
  // The task's instructions: the query's text and the candidates' (empty here) go into the templates.
  b.tasks.back().query_template = "Finde ein Bild: {text}";
  b.tasks.back().target_template = rep + "{text}";
  // The gold is the query itself (text and image); the distractors differ only by the image.
  b.tasks.push_back(task(
      "i2i", "fr", "grounding",
      {query(rep, "img/wide_800x96.png", {rep, rep, rep},
             {"img/wide_800x96.png", "img/tiny_50x30.png", "img/square_256.png"}, "fr", "grounding")}));
  xv::write_benchmark((d.p / "bench").string(), b);
  const xv::Benchmark rb = xv::read_benchmark((d.p / "bench").string());

  const xv::EvalResults r = xv::evaluate(kModel, "", rb, {});
  // Distinct items: 3 labels, 2 text queries, and the 4 images with the instruction, whichever side they are
  // on (the i2t queries are two of them; the copy of square_256 is the same item).
  EXPECT_EQ(r.unique_texts, 3 + 2 + 4);
  EXPECT_EQ(r.unique_images, 4);

  // Independent: each item alone through the Embedder.
  const auto emb = xv::Embedder::load(kModel);
  auto unit = [&](const std::string& text, const std::string& image) {
    xv::EmbedItem it;
    it.text = text;
    it.image = image.empty() ? "" : (d.p / "bench" / image).string();
    const xv::Tensor e = emb->embed({it}, {});
    std::vector<double> v(size_t(e.dim(1)));
    double n = 0;
    for (int64_t i = 0; i < e.dim(1); ++i) v[size_t(i)] = e.at(i), n += v[size_t(i)] * v[size_t(i)];
    for (double& x : v) x /= std::sqrt(n);
    return v;
  };
  ASSERT_EQ(r.tasks.size(), rb.tasks.size());
  for (size_t t = 0; t < rb.tasks.size(); ++t) {
    for (size_t q = 0; q < rb.tasks[t].queries.size(); ++q) {
      const xv::BenchmarkQuery& qu = rb.tasks[t].queries[q];
      const bool t2i = rb.tasks[t].name == "t2i";
      const std::vector<double> qv = unit(t2i ? "Finde ein Bild: " + qu.text : qu.text, qu.image);
      std::vector<double> scores;
      for (size_t c = 0; c < qu.candidates.size(); ++c) {
        const std::vector<double> cv = unit(t2i ? rep + qu.candidates[c] : qu.candidates[c],
                                            qu.candidate_images.empty() ? "" : qu.candidate_images[c]);
        double s = 0;
        for (size_t i = 0; i < cv.size(); ++i) s += qv[i] * cv[i];
        scores.push_back(s);
      }
      std::string ss;
      for (double x : scores) ss += std::to_string(x) + " ";
      EXPECT_EQ(r.tasks[t].ranks_before[q], rank_of_gold(scores)) << rb.tasks[t].name << " query " << q << ": " << ss;
      if (rb.tasks[t].name == "i2i") {
        for (size_t c = 1; c < scores.size(); ++c)
          EXPECT_LT(scores[c], scores[0] - 1e-6) << "the image does not change the embedding (candidate " << c << ")";
        EXPECT_EQ(r.tasks[t].ranks_before[q], 1);
      }
    }
  }
}

TEST(EvalImages, MissingImageNamesTheQuery) {
  Dir d;
  xv::Benchmark b;
  b.name = "images";
  b.tasks.push_back(task("i2t", "it", "classification",
                         {query("<|image_1|>", (d.p / "gone.png").string(), {"a", "b"}, {}, "it", "classification")}));
  b.dir = (d.p / "bench").string();
  try {
    xv::evaluate(kModel, "", b, {});
    FAIL() << "a missing image was accepted";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gone.png"), std::string::npos) << e.what();
  }
}

}  // namespace
