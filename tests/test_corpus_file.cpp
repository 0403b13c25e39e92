// The corpus file (docs/corpus-format.md): our writer and reader agree with each other and with h5py in both
// directions (tools/h5py_corpus.py, run with the Python of the prepare_h5py ctest fixture), and every kind of
// bad file ends in an xv::Error, or a validate_corpus problem, naming the file and the dataset or attribute.
// Malformed files are made by writing a valid corpus and editing it through data/hdf5_file.h, or by
// `h5py_corpus.py write-bad`. This suite also runs under -DXV_SANITIZE=ON.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "core/error.h"
#include "core/file_util.h"
#include "data/train_data.h"
#include "data/corpus.h"
#include "data/hdf5_file.h"
#include "tests/corpus_samples.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using xv_test::sample_corpus;
using xv_test::SampleOptions;

const std::string kTool = std::string(XV_SOURCE_DIR) + "/tools/h5py_corpus.py";

// The interpreter with h5py: the environment variable wins (to check by hand against another h5py).
std::string python() {
  if (const char* p = std::getenv("XV_H5PY_PYTHON"); p && *p) return p;
  return XV_H5PY_PYTHON;
}

// A private folder per test, removed afterwards.
class TmpDir {
 public:
  TmpDir() {
    const auto* t = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("xv_corpus_" + std::string(t->test_suite_name()) + "_" + t->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~TmpDir() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string operator/(const std::string& name) const { return (dir_ / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  fs::path dir_;
};

std::string quote(const std::string& s) { return "'" + s + "'"; }

// Runs a shell command, its output into `log`; returns the exit status and the output.
std::pair<int, std::string> run(const std::string& cmd, const std::string& log) {
  const int rc = std::system((cmd + " > " + quote(log) + " 2>&1").c_str());
  std::string out = fs::exists(log) ? xv::read_file(log) : "";
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : 128, out};
}

void expect_has(const std::string& msg, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(msg.empty()) << "no error was raised";
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
}

std::string read_error(const std::string& path, const xv::ReadCorpusOptions& o = {}) {
  try {
    xv::read_corpus(path, o);
  } catch (const xv::Error& e) {
    return e.what();
  }
  return "";
}

// The problem lines of validate_corpus joined, after a read that must succeed.
std::string validate_problems(const std::string& path, const std::string& tokenizer_json = "") {
  const xv::Corpus c = xv::read_corpus(path);
  std::string all;
  for (const auto& p : xv::validate_corpus(c, path, tokenizer_json)) all += p + "\n";
  return all;
}

void edit(const std::string& path, const std::function<void(xv::h5::File&)>& fn) {
  xv::h5::File f = xv::h5::File::open(path, true);
  fn(f);
  f.close();
}

template <typename T>
void replace(xv::h5::File& f, const std::string& name, const std::vector<T>& v, int64_t cols = 0) {
  f.remove(name);
  f.write(name, v, {}, cols);
}

void replace_bytes(xv::h5::File& f, const std::string& name, const std::string& v) {
  f.remove(name);
  f.write_bytes(name, v);
}

// ------------------------------------------------------------------------------------------ in memory equal
void expect_ragged_eq(const xv::Ragged& a, const xv::Ragged& b, const char* what) {
  EXPECT_EQ(a.offsets, b.offsets) << what;
  EXPECT_TRUE(a.bytes == b.bytes) << what;
}

void expect_same(const xv::Corpus& a, const xv::Corpus& b) {
  EXPECT_EQ(a.meta.format_version, b.meta.format_version);
  EXPECT_EQ(a.meta.languages, b.meta.languages);
  EXPECT_EQ(a.meta.source, b.meta.source);
  EXPECT_EQ(a.meta.created_by, b.meta.created_by);
  EXPECT_EQ(a.meta.created_at, b.meta.created_at);
  EXPECT_EQ(a.meta.fingerprint, b.meta.fingerprint);
  expect_ragged_eq(a.text_en, b.text_en, "text_en");
  expect_ragged_eq(a.text_xx, b.text_xx, "text_xx");
  expect_ragged_eq(a.sources, b.sources, "sources");
  EXPECT_EQ(a.pairs.en, b.pairs.en);
  EXPECT_EQ(a.pairs.xx, b.pairs.xx);
  EXPECT_EQ(a.pairs.lang, b.pairs.lang);
  EXPECT_EQ(a.pairs.image, b.pairs.image);
  EXPECT_EQ(a.pairs.source, b.pairs.source);
  expect_ragged_eq(a.images, b.images, "images");
  expect_ragged_eq(a.image_names, b.image_names, "image_names");
  EXPECT_EQ(a.image_width, b.image_width);
  EXPECT_EQ(a.image_height, b.image_height);
  ASSERT_EQ(a.tokens.has_value(), b.tokens.has_value());
  if (a.tokens) {
    EXPECT_EQ(a.tokens->tokenizer_fingerprint, b.tokens->tokenizer_fingerprint);
    EXPECT_EQ(a.tokens->vocab_size, b.tokens->vocab_size);
    EXPECT_EQ(a.tokens->en.ids, b.tokens->en.ids);
    EXPECT_EQ(a.tokens->en.offsets, b.tokens->en.offsets);
    EXPECT_EQ(a.tokens->xx.ids, b.tokens->xx.ids);
    EXPECT_EQ(a.tokens->xx.offsets, b.tokens->xx.offsets);
  }
  ASSERT_EQ(a.teacher.has_value(), b.teacher.has_value());
  if (a.teacher) {
    EXPECT_EQ(a.teacher->model_fingerprint, b.teacher->model_fingerprint);
    EXPECT_EQ(a.teacher->corpus_fingerprint, b.teacher->corpus_fingerprint);
    EXPECT_EQ(a.teacher->dim, b.teacher->dim);
    EXPECT_EQ(a.teacher->embeddings, b.teacher->embeddings);  // bit-exact: float32 stored as float32
  }
}

// ------------------------------------------------------------------------------------------ expected JSON
// The description tools/h5py_corpus.py reads and writes (its docstring defines the fields).
std::vector<std::string> strings(const xv::Ragged& r) {
  std::vector<std::string> out;
  for (size_t i = 0; i < r.size(); ++i) out.emplace_back(r.at(i));
  return out;
}

std::vector<std::vector<int32_t>> rows(const xv::RaggedIds& r) {
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i + 1 < r.offsets.size(); ++i)
    out.emplace_back(r.ids.begin() + int64_t(r.offsets[i]), r.ids.begin() + int64_t(r.offsets[i + 1]));
  return out;
}

json expected_json(const xv::Corpus& c) {
  json j;
  j["format"] = xv::kCorpusFormatName;
  j["format_version"] = c.meta.format_version;
  j["languages"] = c.meta.languages;
  j["fingerprint"] = c.meta.fingerprint;
  j["source"] = c.meta.source;
  j["created_by"] = c.meta.created_by;
  j["created_at"] = c.meta.created_at;
  j["text_en"] = strings(c.text_en);
  j["text_xx"] = strings(c.text_xx);
  j["sources"] = strings(c.sources);
  j["pairs"] = {{"en", c.pairs.en}, {"xx", c.pairs.xx}, {"lang", c.pairs.lang}, {"image", c.pairs.image},
                {"source", c.pairs.source}};
  json im = {{"names", strings(c.image_names)}, {"width", c.image_width}, {"height", c.image_height},
             {"sizes", json::array()}, {"fnv1a64", json::array()}};
  for (size_t i = 0; i < c.images.size(); ++i) {
    im["sizes"].push_back(c.images.at(i).size());
    im["fnv1a64"].push_back(xv::fingerprint_hex(xv::fnv1a64(c.images.at(i))));
  }
  j["images"] = im;
  j["tokens"] = nullptr;
  if (c.tokens)
    j["tokens"] = {{"tokenizer_fingerprint", c.tokens->tokenizer_fingerprint},
                   {"vocab_size", c.tokens->vocab_size},
                   {"en", rows(c.tokens->en)},
                   {"xx", rows(c.tokens->xx)}};
  j["teacher"] = nullptr;
  if (c.teacher) {
    json e = json::array();
    for (size_t r = 0; r < c.pairs.size(); ++r)
      e.push_back(std::vector<float>(c.teacher->embeddings.begin() + int64_t(r * size_t(c.teacher->dim)),
                                     c.teacher->embeddings.begin() + int64_t((r + 1) * size_t(c.teacher->dim))));
    j["teacher"] = {{"model_fingerprint", c.teacher->model_fingerprint},
                    {"corpus_fingerprint", c.teacher->corpus_fingerprint},
                    {"dim", c.teacher->dim},
                    {"embeddings", e}};
  }
  return j;
}

// Every field of a corpus read back against the JSON h5py wrote beside its file; `image_root` holds the
// image files (empty: the tool made them), whose bytes must come back unchanged.
void expect_matches(const xv::Corpus& c, const json& j, const std::string& image_root) {
  EXPECT_EQ(j["format"].get<std::string>(), xv::kCorpusFormatName);
  EXPECT_EQ(c.meta.format_version, j["format_version"].get<int64_t>());
  EXPECT_EQ(c.meta.languages, j["languages"].get<std::vector<std::string>>());
  EXPECT_EQ(c.meta.fingerprint, j["fingerprint"].get<std::string>());
  // Our reader independently recomputes the fingerprint h5py's side computed from the document.
  EXPECT_EQ(xv::corpus_fingerprint(c), j["fingerprint"].get<std::string>());
  for (const auto& [field, value] : {std::pair{"source", &c.meta.source}, std::pair{"created_by", &c.meta.created_by},
                                     std::pair{"created_at", &c.meta.created_at}})
    EXPECT_EQ(*value, j[field].is_null() ? std::string() : j[field].get<std::string>()) << field;
  EXPECT_EQ(strings(c.text_en), j["text_en"].get<std::vector<std::string>>());
  EXPECT_EQ(strings(c.text_xx), j["text_xx"].get<std::vector<std::string>>());
  EXPECT_EQ(strings(c.sources), j["sources"].get<std::vector<std::string>>());
  EXPECT_EQ(c.pairs.en, j["pairs"]["en"].get<std::vector<int64_t>>());
  EXPECT_EQ(c.pairs.xx, j["pairs"]["xx"].get<std::vector<int64_t>>());
  EXPECT_EQ(c.pairs.lang, j["pairs"]["lang"].get<std::vector<uint8_t>>());
  EXPECT_EQ(c.pairs.image, j["pairs"]["image"].get<std::vector<int64_t>>());
  EXPECT_EQ(c.pairs.source, j["pairs"]["source"].get<std::vector<int32_t>>());
  const json& im = j["images"];
  ASSERT_EQ(c.images.size(), im["sizes"].size());
  EXPECT_EQ(strings(c.image_names), im["names"].get<std::vector<std::string>>());
  EXPECT_EQ(c.image_width, im["width"].get<std::vector<int32_t>>());
  EXPECT_EQ(c.image_height, im["height"].get<std::vector<int32_t>>());
  for (size_t i = 0; i < c.images.size(); ++i) {
    EXPECT_EQ(c.images.at(i).size(), im["sizes"][i].get<size_t>()) << "image " << i;
    EXPECT_EQ(xv::fingerprint_hex(xv::fnv1a64(c.images.at(i))), im["fnv1a64"][i].get<std::string>()) << "image " << i;
    if (!image_root.empty()) {
      EXPECT_TRUE(c.images.at(i) == xv::read_file(image_root + "/" + std::string(c.image_names.at(i))))
          << "image " << i << " differs from its file";
    }
  }
  ASSERT_EQ(c.tokens.has_value(), !j["tokens"].is_null());
  if (c.tokens) {
    const json& t = j["tokens"];
    EXPECT_EQ(c.tokens->tokenizer_fingerprint, t["tokenizer_fingerprint"].get<std::string>());
    EXPECT_EQ(c.tokens->vocab_size, t["vocab_size"].get<int64_t>());
    EXPECT_EQ(rows(c.tokens->en), (t["en"].get<std::vector<std::vector<int32_t>>>()));
    EXPECT_EQ(rows(c.tokens->xx), (t["xx"].get<std::vector<std::vector<int32_t>>>()));
  }
  ASSERT_EQ(c.teacher.has_value(), !j["teacher"].is_null());
  if (c.teacher) {
    const json& t = j["teacher"];
    EXPECT_EQ(c.teacher->model_fingerprint, t["model_fingerprint"].get<std::string>());
    EXPECT_EQ(c.teacher->corpus_fingerprint, t["corpus_fingerprint"].get<std::string>());
    ASSERT_EQ(c.teacher->dim, t["dim"].get<int64_t>());
    ASSERT_EQ(t["embeddings"].size(), c.pairs.size());
    for (size_t r = 0; r < c.pairs.size(); ++r)
      for (size_t k = 0; k < size_t(c.teacher->dim); ++k)
        EXPECT_EQ(c.teacher->embeddings[r * size_t(c.teacher->dim) + k], t["embeddings"][r][k].get<float>())
            << "row " << r << " column " << k;
  }
}

// ================================================================================== round trip (ours)
TEST(CorpusFile, RoundTripEveryField) {
  TmpDir d;
  xv::Corpus c = sample_corpus();
  xv::write_corpus(d / "c.h5", c);
  EXPECT_EQ(c.meta.fingerprint, xv::corpus_fingerprint(c));
  EXPECT_EQ(c.teacher->corpus_fingerprint, c.meta.fingerprint);  // filled in by the writer
  const xv::Corpus r = xv::read_corpus(d / "c.h5");
  expect_same(c, r);
  EXPECT_EQ(xv::validate_corpus(r, d / "c.h5", xv_test::sample_tokenizer_json()), std::vector<std::string>{});
  EXPECT_EQ(d.entries(), std::vector<std::string>{"c.h5"});  // no temporary left beside it
}

TEST(CorpusFile, RoundTripWithoutOptionalBlocks) {
  TmpDir d;
  xv::Corpus c = sample_corpus({.images = false, .tokens = false, .teacher = false});
  c.meta.source = c.meta.created_by = "";
  xv::write_corpus(d / "c.h5", c);
  const xv::Corpus r = xv::read_corpus(d / "c.h5");
  expect_same(c, r);
  EXPECT_EQ(xv::validate_corpus(r, d / "c.h5"), std::vector<std::string>{});
}

TEST(CorpusFile, ReadWithoutImagesTokensTeacher) {
  TmpDir d;
  xv::Corpus c = sample_corpus();
  xv::write_corpus(d / "c.h5", c);
  const xv::Corpus r = xv::read_corpus(d / "c.h5", {.images = false, .tokens = false, .teacher = false});
  EXPECT_TRUE(r.images.bytes.empty());
  EXPECT_EQ(r.images.offsets, c.images.offsets);  // rows keep their meaning, the bytes stay on disk
  EXPECT_EQ(r.image_width, c.image_width);
  EXPECT_FALSE(r.tokens.has_value());
  EXPECT_FALSE(r.teacher.has_value());
  const auto problems = xv::validate_corpus(r, d / "c.h5");
  ASSERT_EQ(problems.size(), 1u);
  expect_has(problems[0], {d / "c.h5", "/images", "not read"});
}

TEST(CorpusFile, TeacherBlockReplacedInPlace) {
  TmpDir d;
  xv::Corpus c = sample_corpus();
  xv::write_corpus(d / "c.h5", c);
  xv::CorpusTeacher t{.model_fingerprint = "fnv1a64:1111111111111111", .corpus_fingerprint = c.meta.fingerprint,
                      .dim = 2, .embeddings = {}};
  for (size_t i = 0; i < c.pairs.size() * 2; ++i) t.embeddings.push_back(-float(i) / 3.0f);
  xv::write_corpus_teacher(d / "c.h5", t);
  const xv::Corpus r = xv::read_corpus(d / "c.h5");
  c.teacher = t;
  expect_same(c, r);
  EXPECT_EQ(xv::validate_corpus(r, d / "c.h5"), std::vector<std::string>{});
  EXPECT_EQ(d.entries(), std::vector<std::string>{"c.h5"});
}

// ================================================================================== interop with h5py
void h5py_writes_we_read(const std::string& args, const std::string& image_root) {
  TmpDir d;
  const auto [rc, out] = run(quote(python()) + " " + quote(kTool) + " write " + quote(d / "py.h5") + " " + args,
                             d / "log");
  ASSERT_EQ(rc, 0) << out;
  const json j = json::parse(xv::read_file(d / "py.h5.expected.json"));
  const xv::Corpus c = xv::read_corpus(d / "py.h5");
  expect_matches(c, j, image_root);
  const std::string tok = c.tokens ? xv_test::sample_tokenizer_json() : "";
  EXPECT_EQ(xv::validate_corpus(c, d / "py.h5", tok), std::vector<std::string>{});
}

TEST(CorpusInterop, H5pyWritesWeReadGeneratedImage) { h5py_writes_we_read("", ""); }

TEST(CorpusInterop, H5pyWritesWeReadFixtureImagesAndTokens) {
  const std::string images = std::string(XV_FIXTURES) + "/images";
  h5py_writes_we_read("--images " + quote(images) + " --tokenizer " + quote(xv_test::sample_tokenizer_json()),
                      images);
}

TEST(CorpusInterop, H5pyWritesWeReadMinimal) { h5py_writes_we_read("--minimal", ""); }

void we_write_h5py_checks(const SampleOptions& o) {
  TmpDir d;
  xv::Corpus c = sample_corpus(o);
  xv::write_corpus(d / "ours.h5", c);
  xv::write_file_atomic(d / "ours.json", expected_json(c).dump(1));
  const auto [rc, out] = run(quote(python()) + " " + quote(kTool) + " check " + quote(d / "ours.h5") + " " +
                                 quote(d / "ours.json"),
                             d / "log");
  EXPECT_EQ(rc, 0) << out;
}

TEST(CorpusInterop, WeWriteH5pyChecks) { we_write_h5py_checks({}); }

TEST(CorpusInterop, WeWriteH5pyChecksWithoutOptionalBlocks) {
  we_write_h5py_checks({.images = false, .tokens = false, .teacher = false});
}

// The check is not vacuous: one wrong expected value (and a file edited behind the writer's back) fail it,
// naming the field.
TEST(CorpusInterop, H5pyCheckNamesTheMismatch) {
  TmpDir d;
  xv::Corpus c = sample_corpus();
  xv::write_corpus(d / "ours.h5", c);
  json j = expected_json(c);
  j["pairs"]["xx"][2] = 0;
  xv::write_file_atomic(d / "wrong.json", j.dump(1));
  auto [rc, out] = run(quote(python()) + " " + quote(kTool) + " check " + quote(d / "ours.h5") + " " +
                           quote(d / "wrong.json"),
                       d / "log");
  EXPECT_EQ(rc, 1) << out;
  expect_has(out, {"ours.h5", "/pairs/xx"});

  j = expected_json(c);
  j["fingerprint"] = "fnv1a64:0000000000000000";
  xv::write_file_atomic(d / "wrong.json", j.dump(1));
  std::tie(rc, out) = run(quote(python()) + " " + quote(kTool) + " check " + quote(d / "ours.h5") + " " +
                              quote(d / "wrong.json"),
                          d / "log");
  EXPECT_EQ(rc, 1) << out;
  expect_has(out, {"root attribute 'fingerprint'", "fingerprint recomputed from the contents"});

  xv::write_file_atomic(d / "right.json", expected_json(c).dump(1));
  edit(d / "ours.h5", [&](xv::h5::File& f) {
    std::vector<int32_t> w = c.image_width;
    w[1] += 1;
    replace(f, "/images/width", w);
  });
  std::tie(rc, out) = run(quote(python()) + " " + quote(kTool) + " check " + quote(d / "ours.h5") + " " +
                              quote(d / "right.json"),
                          d / "log");
  EXPECT_EQ(rc, 1) << out;
  expect_has(out, {"/images/width", "size in its header"});
}

// Files only another writer can make: each refused with the file and the object named.
TEST(CorpusInterop, H5pyBadFilesRefused) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> kinds = {
      {"pairs-en-float", {"/pairs/en", "int64", "float64"}},
      {"text-bytes-group", {"/text/en/bytes", "not a dataset"}},
      {"text-vlen-strings", {"/text/xx/bytes", "uint8", "string"}},
      {"version-string", {"format_version", "expected an integer"}},
      {"version-float", {"format_version", "expected an integer", "float64"}},
      {"languages-array", {"languages", "one string"}},
      {"format-int", {"format", "expected a string"}},
      {"offsets-2d", {"/sources/offsets", "rank-1", "rank 2"}},
      {"pairs-scalar", {"/pairs/source", "rank-1", "rank 0"}},
      // Refused before anything is allocated.
      {"huge-claim", {"/text/en/bytes", "claims 1099511627776 elements", "stores 0 bytes"}},
  };
  TmpDir d;
  for (const auto& [kind, parts] : kinds) {
    SCOPED_TRACE(kind);
    const std::string path = d / (kind + ".h5");
    const auto [rc, out] = run(quote(python()) + " " + quote(kTool) + " write-bad " + kind + " " + quote(path),
                               d / "log");
    ASSERT_EQ(rc, 0) << out;
    const std::string msg = read_error(path);
    expect_has(msg, {path});
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
  }
}

// ================================================================================== bad input
class CorpusBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_ / "c.h5";
    good_ = sample_corpus();
    xv::write_corpus(path_, good_);
  }
  // Edits the valid file and returns the reader's error.
  std::string edited_error(const std::function<void(xv::h5::File&)>& fn) {
    edit(path_, fn);
    return read_error(path_);
  }

  TmpDir dir_;
  std::string path_;
  xv::Corpus good_;
};

TEST_F(CorpusBadInput, MissingDatasetsAndGroups) {
  const std::string bytes = xv::read_file(path_);
  for (const std::string name :
       {"/text/en/bytes", "/text/en/offsets", "/text/xx/bytes", "/text/xx/offsets", "/sources/bytes",
        "/sources/offsets", "/pairs/en", "/pairs/xx", "/pairs/lang", "/pairs/image", "/pairs/source", "/images/bytes",
        "/images/offsets", "/images/width", "/images/height", "/images/names/bytes", "/images/names/offsets",
        "/tokens/en/ids", "/tokens/en/offsets", "/tokens/xx/ids", "/tokens/xx/offsets", "/teacher/embeddings",
        "/text/xx", "/pairs", "/sources", "/images/names"}) {
    SCOPED_TRACE(name);
    xv::write_file_atomic(path_, bytes);
    const std::string msg = edited_error([&](xv::h5::File& f) { f.remove(name); });
    expect_has(msg, {path_, name, "missing"});
  }
}

TEST_F(CorpusBadInput, MissingAttributes) {
  const std::string bytes = xv::read_file(path_);
  for (const auto& [obj, attr] : std::vector<std::pair<std::string, std::string>>{
           {"/", "format"}, {"/", "format_version"}, {"/", "languages"}, {"/", "fingerprint"},
           {"/tokens", "tokenizer_fingerprint"}, {"/tokens", "vocab_size"}, {"/teacher", "model_fingerprint"},
           {"/teacher", "corpus_fingerprint"}}) {
    SCOPED_TRACE(obj + " " + attr);
    xv::write_file_atomic(path_, bytes);
    const std::string msg =
        edited_error([&](xv::h5::File& f) { ASSERT_GE(H5Adelete_by_name(f.id(), obj.c_str(), attr.c_str(), H5P_DEFAULT), 0); });
    expect_has(msg, {path_, "'" + attr + "'"});
  }
}

TEST_F(CorpusBadInput, UnknownFormatVersion) {
  for (const int64_t v : {int64_t(2), int64_t(0), int64_t(-1)}) {
    const std::string msg = edited_error([&](xv::h5::File& f) { f.write_attr("/", "format_version", v); });
    expect_has(msg, {path_, "unknown corpus format version " + std::to_string(v)});
  }
}

TEST_F(CorpusBadInput, WrongFormatName) {
  const std::string msg =
      edited_error([](xv::h5::File& f) { f.write_attr("/", "format", std::string("xvlm2vec-corpus-x")); });
  expect_has(msg, {path_, "'format'", "xvlm2vec-corpus-x", "expected 'xvlm2vec-corpus'"});
}

TEST_F(CorpusBadInput, NotAnHdf5FileOrNoFile) {
  xv::write_file_atomic(path_, "en\tit\nOpen file\tApri file\n");
  expect_has(read_error(path_), {path_, "not an HDF5 file"});
  expect_has(read_error(dir_ / "absent.h5"), {dir_ / "absent.h5", "no such file"});
  // An HDF5 file that is no corpus.
  xv::h5::File f = xv::h5::File::create(path_);
  f.write("/values", std::vector<float>{1, 2});
  f.close();
  expect_has(read_error(path_), {path_, "not an xvlm2vec corpus", "'format'"});
}

TEST_F(CorpusBadInput, WrongDtype) {
  const std::string bytes = xv::read_file(path_);
  auto as_i32 = [](const std::vector<int64_t>& v) { return std::vector<int32_t>(v.begin(), v.end()); };
  expect_has(edited_error([&](xv::h5::File& f) { replace(f, "/pairs/en", as_i32(good_.pairs.en)); }),
             {path_, "/pairs/en", "expected int64", "found int32"});
  xv::write_file_atomic(path_, bytes);
  expect_has(edited_error([&](xv::h5::File& f) {
               replace(f, "/text/en/offsets",
                       std::vector<int64_t>(good_.text_en.offsets.begin(), good_.text_en.offsets.end()));
             }),
             {path_, "/text/en/offsets", "expected uint64", "found int64"});
  xv::write_file_atomic(path_, bytes);
  expect_has(edited_error([&](xv::h5::File& f) {
               replace(f, "/pairs/lang", std::vector<int32_t>(good_.pairs.lang.begin(), good_.pairs.lang.end()));
             }),
             {path_, "/pairs/lang", "expected uint8", "found int32"});
  xv::write_file_atomic(path_, bytes);
  expect_has(edited_error([&](xv::h5::File& f) {
               replace(f, "/teacher/embeddings", std::vector<int32_t>(good_.teacher->embeddings.size(), 1), 3);
             }),
             {path_, "/teacher/embeddings", "expected float32", "found int32"});
  xv::write_file_atomic(path_, bytes);
  expect_has(edited_error([&](xv::h5::File& f) {
               replace(f, "/images/bytes", std::vector<int32_t>(size_t(good_.images.offsets.back()), 0));
             }),
             {path_, "/images/bytes", "expected uint8", "found int32"});
}

TEST_F(CorpusBadInput, WrongRank) {
  const std::string bytes = xv::read_file(path_);
  std::vector<uint8_t> lang2 = good_.pairs.lang;
  lang2.push_back(0);  // (4, 2)
  expect_has(edited_error([&](xv::h5::File& f) { replace(f, "/pairs/lang", lang2, 2); }),
             {path_, "/pairs/lang", "rank-1", "rank 2"});
  xv::write_file_atomic(path_, bytes);
  expect_has(edited_error([&](xv::h5::File& f) { replace(f, "/teacher/embeddings", good_.teacher->embeddings); }),
             {path_, "/teacher/embeddings", "rank-2", "rank 1"});
}

// A valid file cut anywhere: every prefix is an error naming the file, never a crash or a success.
TEST_F(CorpusBadInput, TruncatedAtEveryScale) {
  const std::string bytes = xv::read_file(path_);
  std::vector<size_t> cuts = {0, 1, 7, 8, 9, 47, 96, 512, 2048, bytes.size() - 1, bytes.size() - 8,
                              bytes.size() - 512, bytes.size() / 2};
  for (size_t k = 1; k < 64; ++k) cuts.push_back(bytes.size() * k / 64);
  for (const size_t n : cuts) {
    SCOPED_TRACE("cut at " + std::to_string(n) + " of " + std::to_string(bytes.size()));
    ASSERT_LT(n, bytes.size());
    xv::write_file_atomic(path_, bytes.substr(0, n));
    expect_has(read_error(path_), {path_});
    expect_has(read_error(path_, {.images = false, .tokens = false, .teacher = false}), {path_});
  }
}

TEST_F(CorpusBadInput, OffsetsOutOfRangeDecreasingOrShort) {
  const std::string bytes = xv::read_file(path_);
  const std::vector<uint64_t> off = good_.text_en.offsets;
  struct Case {
    std::function<void(std::vector<uint64_t>&)> damage;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {[](auto& o) { o.back() += 1; }, {"/text/en/offsets", "last offset", "holds"}},
      {[](auto& o) { o.back() -= 1; }, {"/text/en/offsets", "last offset", "holds"}},
      {[](auto& o) { o[1] = o[2] + 1; }, {"/text/en/offsets", "row 2", "must not decrease"}},
      {[](auto& o) { o[0] = 1; }, {"/text/en/offsets", "row 0 is 1", "expected 0"}},
      {[](auto& o) { o[1] = ~uint64_t(0); }, {"/text/en/offsets", "must not decrease"}},
      {[](auto& o) { o.clear(); }, {"/text/en/offsets", "empty"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    xv::write_file_atomic(path_, bytes);
    std::vector<uint64_t> o = off;
    cases[i].damage(o);
    const std::string msg = edited_error([&](xv::h5::File& f) { replace(f, "/text/en/offsets", o); });
    expect_has(msg, {path_});
    for (const auto& p : cases[i].parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
  }
  // A dropped row: the last English row the pairs use is gone.
  xv::write_file_atomic(path_, bytes);
  std::vector<uint64_t> o = off;
  o.erase(o.begin() + 1);
  expect_has(edited_error([&](xv::h5::File& f) { replace(f, "/text/en/offsets", o); }),
             {path_, "/pairs/en", "outside [0, 3)"});
}

TEST_F(CorpusBadInput, PairRowsOutOfRange) {
  const std::string bytes = xv::read_file(path_);
  struct Case {
    std::string name;
    std::function<void(xv::h5::File&)> damage;
    std::vector<std::string> parts;
  };
  auto with = [](std::vector<int64_t> v, size_t i, int64_t x) {
    v[i] = x;
    return v;
  };
  const std::vector<Case> cases = {
      {"/pairs/en", [&](auto& f) { replace(f, "/pairs/en", with(good_.pairs.en, 3, 4)); }, {"row 3 is 4", "/text/en"}},
      {"/pairs/en", [&](auto& f) { replace(f, "/pairs/en", with(good_.pairs.en, 0, -1)); }, {"row 0 is -1"}},
      {"/pairs/xx", [&](auto& f) { replace(f, "/pairs/xx", with(good_.pairs.xx, 6, 1 << 30)); }, {"row 6"}},
      {"/pairs/image", [&](auto& f) { replace(f, "/pairs/image", with(good_.pairs.image, 1, -2)); }, {"row 1 is -2"}},
      {"/pairs/image", [&](auto& f) { replace(f, "/pairs/image", with(good_.pairs.image, 6, 2)); }, {"row 6 is 2"}},
      {"/pairs/source", [&](auto& f) { replace(f, "/pairs/source", std::vector<int32_t>(7, 2)); }, {"row 0 is 2"}},
      {"/pairs/xx", [&](auto& f) { replace(f, "/pairs/xx", std::vector<int64_t>(6, 0)); }, {"6 rows", "/pairs/en has 7"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    xv::write_file_atomic(path_, bytes);
    const std::string msg = edited_error(c.damage);
    expect_has(msg, {path_, c.name});
    for (const auto& p : c.parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
  }
}

TEST_F(CorpusBadInput, LanguageIndexOutOfRange) {
  std::vector<uint8_t> lang = good_.pairs.lang;
  lang[4] = uint8_t(good_.meta.languages.size());
  expect_has(edited_error([&](xv::h5::File& f) { replace(f, "/pairs/lang", lang); }),
             {path_, "/pairs/lang", "row 4", "'languages'"});
  // Fewer codes than the rows use.
  xv::write_corpus(path_, good_);
  expect_has(edited_error([&](xv::h5::File& f) { f.write_attr("/", "languages", std::string("it")); }),
             {path_, "/pairs/lang", "'languages'"});
  xv::write_corpus(path_, good_);
  expect_has(edited_error([&](xv::h5::File& f) { f.write_attr("/", "languages", std::string("it,,es")); }),
             {path_, "'languages'", "empty code"});
}

TEST_F(CorpusBadInput, InvalidUtf8AndEmptyTextReportedByValidate) {
  // Same lengths, so the structure stays valid: only validate_corpus can see it.
  std::string xx = good_.text_xx.bytes;
  xx[good_.text_xx.offsets[3] + 1] = '\xff';
  std::string src = good_.sources.bytes;
  src[good_.sources.offsets[1] + 10] = 'x';  // the lead byte of 'ç' followed by ASCII
  edit(path_, [&](xv::h5::File& f) {
    replace_bytes(f, "/text/xx/bytes", xx);
    replace_bytes(f, "/sources/bytes", src);
  });
  const std::string p = validate_problems(path_);
  expect_has(p, {path_ + ": /text/xx: row 3: invalid UTF-8 at byte 1", path_ + ": /sources: row 1: invalid UTF-8",
                 "root attribute 'fingerprint'"});

  xv::Corpus c = sample_corpus({.images = false, .tokens = false, .teacher = false});
  c.add_pair("", "vuoto", "it", -1, 0);
  xv::write_corpus(path_, c);
  expect_has(validate_problems(path_), {path_ + ": /text/en: row 4: empty text"});
}

TEST_F(CorpusBadInput, CorruptImageBytesReportedByValidate) {
  std::string img = good_.images.bytes;
  img.replace(0, 8, "NOTAPNG!");                                     // the PNG signature
  img.replace(size_t(good_.images.offsets[1]), 2, std::string(2, '\0'));  // the JPEG start-of-image marker
  edit(path_, [&](xv::h5::File& f) { replace_bytes(f, "/images/bytes", img); });
  expect_has(validate_problems(path_), {path_ + ": /images: row 0 (tiny_50x30.png): does not decode",
                                        path_ + ": /images: row 1 (sub/gray_75x53.jpg): does not decode"});
}

TEST_F(CorpusBadInput, WrongRecordedImageSizeReportedByValidate) {
  edit(path_, [&](xv::h5::File& f) {
    replace(f, "/images/width", std::vector<int32_t>{51, 75});
    replace(f, "/images/height", std::vector<int32_t>{30, -53});
  });
  expect_has(validate_problems(path_), {path_ + ": /images: row 0 (tiny_50x30.png): decodes to 50x30, recorded 51x30",
                                        "row 1 (sub/gray_75x53.jpg): decodes to 75x53, recorded 75x-53"});
  // One size too few is a structural error.
  edit(path_, [&](xv::h5::File& f) { replace(f, "/images/height", std::vector<int32_t>{30}); });
  expect_has(read_error(path_), {path_, "/images", "2 images", "1 heights"});
}

TEST_F(CorpusBadInput, TokenIdOutsideVocabulary) {
  std::vector<int32_t> ids = good_.tokens->xx.ids;
  ids[good_.tokens->xx.offsets[5] + 2] = 1200;
  ids[good_.tokens->xx.offsets[2]] = -7;
  edit(path_, [&](xv::h5::File& f) { replace(f, "/tokens/xx/ids", ids); });
  expect_has(validate_problems(path_), {path_ + ": /tokens/xx: row 5: token id 1200 outside the vocabulary [0, 1200)",
                                        path_ + ": /tokens/xx: row 2: token id -7 outside"});
  xv::write_corpus(path_, good_);
  edit(path_, [&](xv::h5::File& f) { f.write_attr("/tokens", "vocab_size", int64_t(100)); });
  expect_has(validate_problems(path_), {path_ + ": /tokens/en: row 0: token id 101 outside the vocabulary [0, 100)"});
}

TEST_F(CorpusBadInput, TokenizerFingerprintMismatch) {
  const std::string tok = xv_test::sample_tokenizer_json();
  EXPECT_EQ(validate_problems(path_, tok), "");  // made by that tokenizer: no problem
  edit(path_, [&](xv::h5::File& f) {
    f.write_attr("/tokens", "tokenizer_fingerprint", std::string("fnv1a64:0000000000000000"));
  });
  expect_has(validate_problems(path_, tok),
             {path_ + ": /tokens: made by the tokenizer fnv1a64:0000000000000000", tok, xv::tokenizer_fingerprint(tok)});
  EXPECT_EQ(validate_problems(path_), "");  // without a tokenizer.json to compare with, nothing to say
}

TEST_F(CorpusBadInput, CorpusFingerprintModified) {
  edit(path_, [&](xv::h5::File& f) { f.write_attr("/", "fingerprint", std::string("fnv1a64:0123456789abcdef")); });
  expect_has(validate_problems(path_),
             {path_ + ": root attribute 'fingerprint' is fnv1a64:0123456789abcdef", good_.meta.fingerprint,
              path_ + ": /teacher: computed for the corpus " + good_.meta.fingerprint});
  // The contents changed behind the recorded fingerprint (one ASCII letter, still valid UTF-8).
  xv::write_corpus(path_, good_);
  std::string en = good_.text_en.bytes;
  en[0] = 'o';
  edit(path_, [&](xv::h5::File& f) { replace_bytes(f, "/text/en/bytes", en); });
  expect_has(validate_problems(path_), {path_ + ": root attribute 'fingerprint' is " + good_.meta.fingerprint,
                                        "modified after writing"});
  // A teacher block of another corpus, or of the wrong length.
  xv::write_corpus(path_, good_);
  edit(path_, [&](xv::h5::File& f) { f.write_attr("/teacher", "corpus_fingerprint", std::string("fnv1a64:1")); });
  expect_has(validate_problems(path_), {path_ + ": /teacher: computed for the corpus fnv1a64:1"});
  edit(path_, [&](xv::h5::File& f) {
    replace(f, "/teacher/embeddings", std::vector<float>(good_.teacher->embeddings.begin() + 3, good_.teacher->embeddings.end()), 3);
  });
  expect_has(read_error(path_), {path_, "/teacher/embeddings", "6 rows", "7 pairs"});
}

// ================================================================================== failed writes
TEST(CorpusWriteFailure, InconsistentCorpusLeavesNoFile) {
  TmpDir d;
  xv::Corpus c = sample_corpus();
  c.pairs.xx[2] = 99;
  try {
    xv::write_corpus(d / "c.h5", c);
    FAIL() << "no error";
  } catch (const xv::Error& e) {
    expect_has(e.what(), {d / "c.h5", "/pairs/xx", "row 2 is 99"});
  }
  EXPECT_EQ(d.entries(), std::vector<std::string>{});
  c = sample_corpus();
  c.teacher->embeddings.pop_back();
  EXPECT_THROW(xv::write_corpus(d / "c.h5", c), xv::Error);
  c = sample_corpus();
  c.tokens->xx.offsets.pop_back();
  EXPECT_THROW(xv::write_corpus(d / "c.h5", c), xv::Error);
  EXPECT_EQ(d.entries(), std::vector<std::string>{});
}

TEST(CorpusWriteFailure, FailedOverwriteKeepsTheOldFile) {
  TmpDir d;
  xv::Corpus c = sample_corpus();
  xv::write_corpus(d / "c.h5", c);
  const std::string before = xv::read_file(d / "c.h5");
  c.pairs.image[0] = 5;
  EXPECT_THROW(xv::write_corpus(d / "c.h5", c), xv::Error);
  EXPECT_TRUE(xv::read_file(d / "c.h5") == before);
  EXPECT_EQ(d.entries(), std::vector<std::string>{"c.h5"});
}

TEST(CorpusWriteFailure, UnwritableTargetIsAnErrorAndLeavesNothing) {
  TmpDir d;
  xv::Corpus c = sample_corpus();
  expect_has([&] {
    try {
      xv::write_corpus(d / "no/such/dir/c.h5", c);
    } catch (const xv::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), {"c.h5"});
  // The target is a folder with something in it: the rename fails after the whole file was written.
  fs::create_directories(d / "c.h5/inside");
  expect_has([&] {
    try {
      xv::write_corpus(d / "c.h5", c);
    } catch (const xv::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), {d / "c.h5"});
  EXPECT_TRUE(fs::is_directory(d / "c.h5/inside"));
  EXPECT_EQ(d.entries(), std::vector<std::string>{"c.h5"});
}

TEST(CorpusWriteFailure, FailedTeacherWriteKeepsTheOriginal) {
  TmpDir d;
  xv::Corpus c = sample_corpus();
  xv::write_corpus(d / "c.h5", c);
  const std::string before = xv::read_file(d / "c.h5");
  auto teacher_error = [&](const xv::CorpusTeacher& t, const std::string& path) {
    try {
      xv::write_corpus_teacher(path, t);
    } catch (const xv::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  xv::CorpusTeacher t = *c.teacher;
  t.embeddings.pop_back();
  expect_has(teacher_error(t, d / "c.h5"), {d / "c.h5", "do not make (7, 3)"});
  t = *c.teacher;
  t.corpus_fingerprint = "fnv1a64:0000000000000001";
  expect_has(teacher_error(t, d / "c.h5"), {d / "c.h5", "computed for corpus fnv1a64:0000000000000001"});
  t.dim = 0;
  t.embeddings.clear();
  expect_has(teacher_error(t, d / "c.h5"), {d / "c.h5"});
  EXPECT_TRUE(xv::read_file(d / "c.h5") == before);
  EXPECT_EQ(d.entries(), std::vector<std::string>{"c.h5"});
  // Not a corpus at all: refused, left as it was.
  xv::write_file_atomic(d / "x.h5", "not hdf5");
  expect_has(teacher_error(*c.teacher, d / "x.h5"), {d / "x.h5" + ": not an HDF5 file"});
  EXPECT_EQ(xv::read_file(d / "x.h5"), "not hdf5");
  EXPECT_EQ(d.entries(), (std::vector<std::string>{"c.h5", "x.h5"}));
}

}  // namespace
