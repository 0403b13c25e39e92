// Small in-memory corpora for the corpus file tests and the reader's fuzz seeds: several languages, English
// rows shared by several pairs, multi-byte UTF-8 on both sides, a PNG pair, a JPEG pair, text-only pairs,
// optional /tokens (recorded as made by the tiny_bert fixture's tokenizer.json) and /teacher blocks.
#pragma once
#include <string>
#include <vector>

#include "core/file_util.h"
#include "data/corpus.h"

namespace xv_test {

struct SampleOptions {
  bool images = true;
  bool tokens = true;
  bool teacher = true;
};

inline std::string sample_tokenizer_json() { return std::string(XV_FIXTURES) + "/models/tiny_bert/tokenizer.json"; }

inline xv::Corpus sample_corpus(const SampleOptions& o = {}) {
  xv::Corpus c;
  c.meta.source = "tsv";
  c.meta.created_by = "test_corpus_file --sample";
  c.meta.created_at = "2024-05-06T07:08:09Z";
  const size_t s_core = c.sources.push("coreutils"), s_cap = c.sources.push("captions/ç.jsonl");
  int64_t png = -1, jpg = -1;
  if (o.images) {
    // Sizes as the fixture names say (tests/fixtures/images, made by tools/make_image_fixtures.py).
    const std::string dir = std::string(XV_FIXTURES) + "/images/";
    png = int64_t(c.images.push(xv::read_file(dir + "tiny_50x30.png")));
    c.image_names.push("tiny_50x30.png");
    c.image_width.push_back(50), c.image_height.push_back(30);
    jpg = int64_t(c.images.push(xv::read_file(dir + "gray_75x53.jpg")));
    c.image_names.push("sub/gray_75x53.jpg");
    c.image_width.push_back(75), c.image_height.push_back(53);
  }
  // One English row serving three languages: the pools are shared, the pairs point into them.
  const int64_t open = int64_t(c.text_en.push("Open file"));
  auto add = [&](int64_t en, const char* xx, const char* lang, int64_t image, size_t source) {
    c.pairs.en.push_back(en);
    c.pairs.xx.push_back(int64_t(c.text_xx.push(xx)));
    c.pairs.lang.push_back(c.lang_code(lang));
    c.pairs.image.push_back(image);
    c.pairs.source.push_back(int32_t(source));
  };
  add(open, "Apri file", "it", -1, s_core);
  add(open, "Abrir archivo", "es", -1, s_core);
  add(open, "Datei öffnen", "de", -1, s_core);
  const int64_t denied = int64_t(c.text_en.push("Cannot open '%s': permission denied"));
  add(denied, "'%s' を開けません: 許可がありません", "ja", -1, s_core);
  add(denied, "Не удаётся открыть «%s»", "ru", -1, s_core);
  c.add_pair("A small gradient — “tiny” ✓", "Un piccolo gradiente — «minuscolo» ✓", "it", png, int32_t(s_cap));
  c.add_pair("A grey photograph 🙂", "Una fotografía gris 🙂", "es", jpg, int32_t(s_cap));
  if (o.tokens) {
    xv::CorpusTokens t;
    t.tokenizer_fingerprint = xv::tokenizer_fingerprint(sample_tokenizer_json());
    t.vocab_size = 1200;  // the tiny_bert vocabulary
    // Made-up ids inside the vocabulary: the format, not the tokenizer, is under test here.
    auto ids = [](std::string_view s) {
      std::vector<int32_t> r{101};
      for (size_t i = 0; i < s.size(); ++i) r.push_back(int32_t((uint8_t(s[i]) * 7 + i) % 1200));
      r.push_back(102);
      return r;
    };
    for (size_t i = 0; i < c.text_en.size(); ++i) t.en.push(ids(c.text_en.at(i)));
    for (size_t i = 0; i < c.text_xx.size(); ++i) t.xx.push(ids(c.text_xx.at(i)));
    c.tokens = std::move(t);
  }
  if (o.teacher) {
    xv::CorpusTeacher t;
    t.model_fingerprint = "fnv1a64:00000000feedbeef";
    t.dim = 3;
    for (size_t i = 0; i < c.pairs.size() * 3; ++i) t.embeddings.push_back(float(i) * 0.37f - 2.5f);
    c.teacher = std::move(t);  // corpus_fingerprint is filled by write_corpus
  }
  return c;
}

}  // namespace xv_test
