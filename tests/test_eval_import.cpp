// `eval import` (eval/import_vlm2vec.h): released VLM2Vec evaluation files (tests/fixtures/eval/vlm2vec_release,
// made by its make.py in the released layout) become a benchmark folder that reads back, with every query and
// candidate as written, the family and language added, and the images referenced where they are, not copied;
// and each kind of bad file is refused naming the file, the line and the field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "eval/benchmark.h"
#include "eval/import_vlm2vec.h"

namespace fs = std::filesystem;

namespace {

const std::string kRelease = std::string(XV_FIXTURES) + "/eval/vlm2vec_release";

struct TempDir {
  fs::path p;
  TempDir() {
    p = fs::temp_directory_path() / ("xv-import-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                     "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(p);
    fs::create_directories(p);
  }
  ~TempDir() { fs::remove_all(p); }
  std::string file(const std::string& name, const std::string& text) const {
    const fs::path f = p / name;
    fs::create_directories(f.parent_path());
    std::ofstream(f) << text;
    return f.string();
  }
};

xv::ImportSource source(const std::string& file) {
  xv::ImportSource s;
  s.file = file;
  return s;
}

xv::Benchmark import_into(const std::vector<xv::ImportSource>& srcs, const fs::path& out) {
  xv::ImportOptions o;
  o.out_dir = out.string();
  o.name = "released";
  return xv::import_vlm2vec(srcs, o);
}

std::string error_of(const std::vector<xv::ImportSource>& srcs, const fs::path& out) {
  try {
    import_into(srcs, out);
  } catch (const xv::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(EvalImport, MmebFamilies) {
  EXPECT_EQ(xv::mmeb_family("ImageNet-1K"), "classification");
  EXPECT_EQ(xv::mmeb_family("OK-VQA"), "vqa");
  EXPECT_EQ(xv::mmeb_family("MSCOCO_t2i"), "retrieval");
  EXPECT_EQ(xv::mmeb_family("MSCOCO"), "grounding");
  EXPECT_EQ(xv::mmeb_family("RefCOCO-Matching"), "grounding");
  EXPECT_EQ(xv::mmeb_family("imagenet-1k"), "");
  EXPECT_EQ(xv::mmeb_family("Emoji"), "");
}

TEST(EvalImport, ReleasedFilesReadBackWithImagesWhereTheyAre) {
  TempDir t;
  const fs::path out = t.p / "bench";
  xv::ImportSource emoji = source(kRelease + "/Emoji_fr.jsonl");
  emoji.family = "classification";
  const xv::Benchmark b = import_into(
      {source(kRelease + "/ImageNet-1K_it.jsonl"), source(kRelease + "/MSCOCO_t2i_de.jsonl"), emoji}, out);
  xv::write_benchmark(out.string(), b);
  const xv::Benchmark r = xv::read_benchmark(out.string());
  ASSERT_EQ(r.tasks.size(), 3u);

  const xv::BenchmarkTask& c = r.tasks[0];
  EXPECT_EQ(c.name, "ImageNet-1K/it");
  EXPECT_EQ(c.language, "it");
  EXPECT_EQ(c.task_type, "classification");
  EXPECT_EQ(c.direction, "xx->xx");
  ASSERT_EQ(c.queries.size(), 2u);
  EXPECT_EQ(c.num_candidates, 3);
  EXPECT_EQ(c.queries[0].text, "<|image_1|>\nRappresenta l'immagine data per la classificazione");
  EXPECT_EQ(c.queries[1].candidates, (std::vector<std::string>{"pesce rosso", "tinca", "squalo bianco"}));
  EXPECT_TRUE(c.queries[0].candidate_images.empty()) << "a list of empty paths is no images";
  // The query image is the released file itself, reached from the benchmark folder.
  EXPECT_TRUE(fs::equivalent(out / c.queries[0].image, kRelease + "/eval_images/ImageNet-1K/n01440764_1.png"));
  EXPECT_TRUE(fs::path(c.queries[0].image).is_relative()) << c.queries[0].image;

  const xv::BenchmarkTask& t2i = r.tasks[1];
  EXPECT_EQ(t2i.name, "MSCOCO_t2i/de");
  EXPECT_EQ(t2i.task_type, "retrieval");
  EXPECT_EQ(t2i.queries[1].text, "Finde ein Bild: ein Bär sitzt im Gras.");
  EXPECT_TRUE(t2i.queries[1].image.empty());
  ASSERT_EQ(t2i.queries[1].candidate_images.size(), 3u);
  EXPECT_TRUE(fs::equivalent(out / t2i.queries[1].candidate_images[0],
                             kRelease + "/eval_images/MSCOCO_t2i/000000000285.png"));
  EXPECT_EQ(t2i.queries[1].candidates[0], "<|image_1|>\nStelle das gegebene Bild dar");

  EXPECT_EQ(r.tasks[2].name, "Emoji/fr");
  EXPECT_EQ(r.tasks[2].task_type, "classification");
  EXPECT_TRUE(r.english.empty());

  // Nothing but the manifest and the task files was written: no image was copied.
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    const std::string ext = e.path().extension().string();
    EXPECT_TRUE(ext == ".jsonl" || ext == ".json") << e.path();
  }
}

TEST(EvalImport, ImageRootAndLanguageOverride) {
  TempDir t;
  // A file whose name gives no language, its images under another folder.
  std::ifstream in(kRelease + "/MSCOCO_t2i_de.jsonl");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string file = t.file("release/MSCOCO_t2i.jsonl", text);
  xv::ImportSource s = source(file);
  EXPECT_NE(error_of({s}, t.p / "b").find("gives no language"), std::string::npos);
  s.language = "de";
  const std::string e = error_of({s}, t.p / "b");
  EXPECT_NE(e.find(file + ":1: field 'tgt_img_path'"), std::string::npos) << e;
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;
  EXPECT_NE(e.find("--image-root"), std::string::npos) << e;
  s.image_root = kRelease;
  const xv::Benchmark b = import_into({s}, t.p / "b");
  EXPECT_EQ(b.tasks[0].name, "MSCOCO_t2i/de");
  EXPECT_EQ(b.tasks[0].file, "MSCOCO_t2i_de.jsonl");
}

TEST(EvalImport, UnknownDatasetNeedsAFamily) {
  TempDir t;
  const std::string e = error_of({source(kRelease + "/Emoji_fr.jsonl")}, t.p / "b");
  EXPECT_NE(e.find("dataset 'Emoji' is not one of MMEB's"), std::string::npos) << e;
  EXPECT_NE(e.find("--family"), std::string::npos) << e;
}

TEST(EvalImport, BadFilesNameFileLineAndField) {
  TempDir t;
  const std::string ok = R"({"qry_text": "q", "qry_img_path": null, "tgt_text": ["a", "b"], "tgt_img_path": null})";
  struct Case {
    const char* what;
    std::string text;
    std::string expect;
  } cases[] = {
      {"not JSON", ok + "\n{oops\n", ":2: not valid JSON"},
      {"not an object", "[1, 2]\n", ":1: each line must be a JSON object"},
      {"no tgt_text", R"({"qry_text": "q"})", ":1: missing field 'tgt_text'"},
      {"tgt_text a string", R"({"qry_text": "q", "tgt_text": "a"})", ":1: field 'tgt_text' must be a list"},
      {"empty tgt_text", R"({"qry_text": "q", "tgt_text": []})", ":1: field 'tgt_text' is an empty list"},
      {"a number in tgt_text", R"({"qry_text": "q", "tgt_text": ["a", 3]})", ":1: field 'tgt_text' entry 1 must be a string"},
      {"short tgt_img_path", R"({"qry_text": "q", "tgt_text": ["a", "b"], "tgt_img_path": [""]})",
       ":1: field 'tgt_img_path' has 1 entries, but 'tgt_text' has 2"},
      {"empty candidate without image", R"({"qry_text": "q", "tgt_text": ["a", ""]})",
       ":1: field 'tgt_text' entry 1 is empty and has no image"},
      {"no query", R"({"qry_text": "", "tgt_text": ["a"]})", ":1: field 'qry_text' is empty"},
      {"qry_img_path a number", R"({"qry_text": "q", "qry_img_path": 3, "tgt_text": ["a"]})",
       ":1: field 'qry_img_path' must be a string"},
      {"missing query image", R"({"qry_text": "q", "qry_img_path": "nowhere.png", "tgt_text": ["a"]})",
       ":1: field 'qry_img_path': image"},
      {"other candidate count", ok + "\n" + R"({"qry_text": "q", "tgt_text": ["a", "b", "c"]})",
       ":2: field 'tgt_text' has 3 candidates, but line 1 has 2"},
      {"no lines", "\n\n", ": no query lines"},
  };
  for (const auto& c : cases) {
    const std::string f = t.file("VOC2007_es.jsonl", c.text);
    const std::string e = error_of({source(f)}, t.p / "b");
    EXPECT_NE(e.find(f + c.expect), std::string::npos) << c.what << ": " << e;
  }
  // One dataset and language twice.
  const std::string f = t.file("VOC2007_es.jsonl", ok + "\n");
  const std::string g = t.file("other/VOC2007_es.jsonl", ok + "\n");
  const std::string e = error_of({source(f), source(g)}, t.p / "b");
  EXPECT_NE(e.find(g + ": a second file for dataset 'VOC2007' in language 'es'"), std::string::npos) << e;
  // A language that is no code, given by hand.
  xv::ImportSource s = source(f);
  s.language = "Deutsch";
  EXPECT_NE(error_of({s}, t.p / "b").find("'Deutsch' is not a language code"), std::string::npos);
}

}  // namespace
