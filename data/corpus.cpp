// The corpus file (docs/corpus-format.md): writer, whole-file reader, validator, teacher block.
#include "data/corpus.h"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <unistd.h>

#include "core/error.h"
#include "core/file_util.h"
#include "image/image.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "data/train_data.h"
#include "data/hdf5_file.h"

namespace xv {

namespace fs = std::filesystem;

size_t Corpus::add_pair(std::string_view en, std::string_view xx, const std::string& lang, int64_t image,
                        int32_t source) {
  const uint8_t code = lang_code(lang);
  pairs.en.push_back(int64_t(text_en.push(en)));
  pairs.xx.push_back(int64_t(text_xx.push(xx)));
  pairs.lang.push_back(code);
  pairs.image.push_back(image);
  pairs.source.push_back(source);
  return pairs.size() - 1;
}

uint8_t Corpus::lang_code(const std::string& lang) {
  for (size_t i = 0; i < meta.languages.size(); ++i)
    if (meta.languages[i] == lang) return uint8_t(i);
  XV_CHECK(meta.languages.size() < 255, "corpus: more than 255 languages");
  XV_CHECK(!lang.empty() && lang.find(',') == std::string::npos, "corpus: invalid language code '{}'", lang);
  meta.languages.push_back(lang);
  return uint8_t(meta.languages.size() - 1);
}

namespace {

std::string join(const std::vector<std::string>& v, char sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? std::string(1, sep) : "") + v[i];
  return s;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t a = 0;
  while (true) {
    const size_t b = s.find(sep, a);
    out.push_back(s.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) break;
    a = b + 1;
  }
  return out;
}

uint64_t hash_field(uint64_t h, std::string_view s) {
  // Length first: no two different field sequences hash the same bytes.
  const uint64_t n = s.size();
  h = fnv1a64(std::string_view(reinterpret_cast<const char*>(&n), sizeof n), h);
  return fnv1a64(s, h);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Offsets of a ragged dataset: n+1 entries, starting at 0, non-decreasing, ending at the data length.
void check_offsets(const std::vector<uint64_t>& off, uint64_t data_len, const std::string& where) {
  XV_CHECK(!off.empty(), "{}/offsets: empty (expected n+1 entries, starting with 0)", where);
  XV_CHECK(off[0] == 0, "{}/offsets: row 0 is {}, expected 0", where, off[0]);
  for (size_t i = 1; i < off.size(); ++i)
    XV_CHECK(off[i] >= off[i - 1], "{}/offsets: row {} ({}) is below row {} ({}): offsets must not decrease", where, i,
             off[i], i - 1, off[i - 1]);
  XV_CHECK(off.back() == data_len, "{}/offsets: the last offset is {}, but the data holds {} elements", where,
           off.back(), data_len);
}

template <typename T>
void check_rows(const std::vector<T>& v, int64_t lo, int64_t hi, const std::string& where, const char* what) {
  for (size_t i = 0; i < v.size(); ++i)
    XV_CHECK(int64_t(v[i]) >= lo && int64_t(v[i]) < hi, "{}: row {} is {}, outside [{}, {}) ({})", where, i,
             int64_t(v[i]), lo, hi, what);
}

// Everything in memory agrees with itself; `where` prefixes messages (a path). `image_bytes` is the length
// of the image data when its bytes are not held (read with images = false): the offsets are checked
// against it instead.
void check_corpus(const Corpus& c, const std::string& where, std::optional<uint64_t> image_bytes = std::nullopt) {
  check_offsets(c.text_en.offsets, c.text_en.bytes.size(), where + ": /text/en");
  check_offsets(c.text_xx.offsets, c.text_xx.bytes.size(), where + ": /text/xx");
  check_offsets(c.sources.offsets, c.sources.bytes.size(), where + ": /sources");
  const size_t P = c.pairs.en.size();
  for (const auto& [n, name] : {std::pair{c.pairs.xx.size(), "xx"}, std::pair{c.pairs.lang.size(), "lang"},
                                std::pair{c.pairs.image.size(), "image"}, std::pair{c.pairs.source.size(), "source"}})
    XV_CHECK(n == P, "{}: /pairs/{} has {} rows, /pairs/en has {}: every /pairs dataset has one row per pair", where,
             name, n, P);
  check_rows(c.pairs.en, 0, int64_t(c.text_en.size()), where + ": /pairs/en", "a row of /text/en");
  check_rows(c.pairs.xx, 0, int64_t(c.text_xx.size()), where + ": /pairs/xx", "a row of /text/xx");
  check_rows(c.pairs.lang, 0, int64_t(c.meta.languages.size()), where + ": /pairs/lang",
             "an index into the root attribute 'languages'");
  check_rows(c.pairs.image, -1, int64_t(c.images.size()), where + ": /pairs/image", "a row of /images, or -1");
  check_rows(c.pairs.source, 0, int64_t(c.sources.size()), where + ": /pairs/source", "a row of /sources");
  const size_t M = c.images.size();
  if (M > 0 || c.image_width.size() > 0) {
    check_offsets(c.images.offsets, image_bytes.value_or(c.images.bytes.size()), where + ": /images");
    XV_CHECK(c.image_width.size() == M && c.image_height.size() == M && c.image_names.size() == M,
             "{}: /images: {} images but {} widths, {} heights and {} names", where, M, c.image_width.size(),
             c.image_height.size(), c.image_names.size());
    check_offsets(c.image_names.offsets, c.image_names.bytes.size(), where + ": /images/names");
  }
  if (c.tokens) {
    check_offsets(c.tokens->en.offsets, c.tokens->en.ids.size(), where + ": /tokens/en");
    check_offsets(c.tokens->xx.offsets, c.tokens->xx.ids.size(), where + ": /tokens/xx");
    XV_CHECK(c.tokens->en.size() == c.text_en.size() && c.tokens->xx.size() == c.text_xx.size(),
             "{}: /tokens: {} English and {} other rows, but the texts have {} and {}", where, c.tokens->en.size(),
             c.tokens->xx.size(), c.text_en.size(), c.text_xx.size());
  }
  if (c.teacher) {
    XV_CHECK(c.teacher->dim > 0 && c.teacher->embeddings.size() == P * size_t(c.teacher->dim),
             "{}: /teacher/embeddings: expected ({}, {}) float32, holds {} values", where, P, c.teacher->dim,
             c.teacher->embeddings.size());
  }
}

void write_ragged(h5::File& f, const std::string& g, const Ragged& r, const h5::WriteOptions& o) {
  f.write_bytes(g + "/bytes", r.bytes, o);
  f.write(g + "/offsets", r.offsets);
}

Ragged read_ragged(const h5::File& f, const std::string& g) {
  Ragged r;
  r.bytes = f.read_bytes(g + "/bytes");
  r.offsets = f.read<uint64_t>(g + "/offsets");
  check_offsets(r.offsets, r.bytes.size(), f.path() + ": " + g);
  return r;
}

RaggedIds read_ragged_ids(const h5::File& f, const std::string& g) {
  RaggedIds r;
  r.ids = f.read<int32_t>(g + "/ids");
  r.offsets = f.read<uint64_t>(g + "/offsets");
  check_offsets(r.offsets, r.ids.size(), f.path() + ": " + g);
  return r;
}

void write_teacher_block(h5::File& f, const CorpusTeacher& t) {
  f.write("/teacher/embeddings", t.embeddings, {.chunk_bytes = 4 << 20, .deflate = 0}, t.dim);
  f.write_attr("/teacher", "model_fingerprint", t.model_fingerprint);
  f.write_attr("/teacher", "corpus_fingerprint", t.corpus_fingerprint);
}

}  // namespace

namespace {

// `image(i)` gives image i's bytes (a view into the corpus, or bytes read on demand).
template <typename ImageBytes>
std::string fingerprint_of(const Corpus& c, ImageBytes&& image) {
  uint64_t h = fnv1a64("xvlm2vec-corpus-v1");
  for (size_t i = 0; i < c.pairs.size(); ++i) {
    h = hash_field(h, c.text_en.at(size_t(c.pairs.en[i])));
    h = hash_field(h, c.text_xx.at(size_t(c.pairs.xx[i])));
    h = hash_field(h, c.meta.languages.at(c.pairs.lang[i]));
    if (c.pairs.image[i] < 0) h = hash_field(h, std::string_view("\x01none"));
    else h = hash_field(h, image(c.pairs.image[i]));
    h = hash_field(h, c.sources.at(size_t(c.pairs.source[i])));
  }
  return fingerprint_hex(h);
}

}  // namespace

std::string corpus_fingerprint(const Corpus& c, const std::function<std::string(int64_t)>& image_bytes) {
  return fingerprint_of(c, image_bytes);
}

std::string corpus_fingerprint(const Corpus& c) {
  return fingerprint_of(c, [&](int64_t im) { return c.images.at(size_t(im)); });
}

std::string tokenizer_fingerprint(const std::string& tokenizer_json_path) {
  return fingerprint_hex(fnv1a64(read_file(tokenizer_json_path)));
}

uint64_t corpus_payload_bytes(const Corpus& c) {
  const auto ragged = [](const Ragged& r) { return uint64_t(r.bytes.size()) + 8 * uint64_t(r.offsets.size()); };
  uint64_t n = ragged(c.text_en) + ragged(c.text_xx) + ragged(c.sources) + ragged(c.images) + ragged(c.image_names);
  n += uint64_t(c.pairs.size()) * (8 + 8 + 1 + 8 + 4) + 8 * uint64_t(c.image_width.size());
  if (c.tokens)
    for (const RaggedIds* r : {&c.tokens->en, &c.tokens->xx})
      n += 4 * uint64_t(r->ids.size()) + 8 * uint64_t(r->offsets.size());
  if (c.teacher) n += 4 * uint64_t(c.teacher->embeddings.size());
  return n;
}

void write_corpus(const std::string& path, Corpus& c) {
  check_corpus(c, path);
  c.meta.format_version = kCorpusFormatVersion;
  c.meta.fingerprint = corpus_fingerprint(c);
  if (c.meta.created_at.empty()) c.meta.created_at = utc_now();
  if (c.teacher && c.teacher->corpus_fingerprint.empty()) c.teacher->corpus_fingerprint = c.meta.fingerprint;
  const fs::path target = fs::absolute(path);
  require_replaceable_file(target.string());
  const std::string tmp =
      (target.parent_path() / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  try {
    h5::File f = h5::File::create(tmp);
    const h5::WriteOptions text{.chunk_bytes = 1 << 20, .deflate = 4};
    write_ragged(f, "/text/en", c.text_en, text);
    write_ragged(f, "/text/xx", c.text_xx, text);
    write_ragged(f, "/sources", c.sources, text);
    f.write("/pairs/en", c.pairs.en);
    f.write("/pairs/xx", c.pairs.xx);
    f.write("/pairs/lang", c.pairs.lang);
    f.write("/pairs/image", c.pairs.image);
    f.write("/pairs/source", c.pairs.source);
    write_ragged(f, "/images", c.images, {.chunk_bytes = 1 << 20, .deflate = 0});
    f.write("/images/width", c.image_width);
    f.write("/images/height", c.image_height);
    write_ragged(f, "/images/names", c.image_names, text);
    if (c.tokens) {
      f.write("/tokens/en/ids", c.tokens->en.ids);
      f.write("/tokens/en/offsets", c.tokens->en.offsets);
      f.write("/tokens/xx/ids", c.tokens->xx.ids);
      f.write("/tokens/xx/offsets", c.tokens->xx.offsets);
      f.write_attr("/tokens", "tokenizer_fingerprint", c.tokens->tokenizer_fingerprint);
      f.write_attr("/tokens", "vocab_size", c.tokens->vocab_size);
    }
    if (c.teacher) write_teacher_block(f, *c.teacher);
    f.write_attr("/", "format", std::string(kCorpusFormatName));
    f.write_attr("/", "format_version", c.meta.format_version);
    f.write_attr("/", "languages", join(c.meta.languages, ','));
    f.write_attr("/", "source", c.meta.source);
    f.write_attr("/", "created_by", c.meta.created_by);
    f.write_attr("/", "created_at", c.meta.created_at);
    f.write_attr("/", "fingerprint", c.meta.fingerprint);
    f.close();
    std::error_code ec;
    fs::rename(tmp, target, ec);
    XV_CHECK(!ec, "{}: cannot replace it with the written corpus {}: {}", path, tmp, ec.message());
  } catch (const Error& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw Error(name_destination(e.what(), tmp, target.string()));
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

CorpusMeta read_corpus_meta(const h5::File& f) {
  CorpusMeta m;
  const std::string& p = f.path();
  XV_CHECK(f.has_attr("/", "format"), "{}: not an xvlm2vec corpus (no root attribute 'format')", p);
  const std::string name = f.read_string_attr("/", "format");
  XV_CHECK(name == kCorpusFormatName, "{}: root attribute 'format' is '{}', expected '{}'", p, name, kCorpusFormatName);
  m.format_version = f.read_int_attr("/", "format_version");
  XV_CHECK(m.format_version == kCorpusFormatVersion,
           "{}: unknown corpus format version {} (this build reads version {}; see docs/corpus-format.md)", p,
           m.format_version, kCorpusFormatVersion);
  m.languages = split(f.read_string_attr("/", "languages"), ',');
  for (const auto& l : m.languages) XV_CHECK(!l.empty(), "{}: root attribute 'languages' has an empty code", p);
  m.source = f.has_attr("/", "source") ? f.read_string_attr("/", "source") : "";
  m.created_by = f.has_attr("/", "created_by") ? f.read_string_attr("/", "created_by") : "";
  m.created_at = f.has_attr("/", "created_at") ? f.read_string_attr("/", "created_at") : "";
  m.fingerprint = f.read_string_attr("/", "fingerprint");
  return m;
}

Corpus read_corpus(const std::string& path, const ReadCorpusOptions& opt) {
  const h5::File f = h5::File::open(path);
  Corpus c;
  c.meta = read_corpus_meta(f);
  c.text_en = read_ragged(f, "/text/en");
  c.text_xx = read_ragged(f, "/text/xx");
  c.sources = read_ragged(f, "/sources");
  c.pairs.en = f.read<int64_t>("/pairs/en");
  c.pairs.xx = f.read<int64_t>("/pairs/xx");
  c.pairs.lang = f.read<uint8_t>("/pairs/lang");
  c.pairs.image = f.read<int64_t>("/pairs/image");
  c.pairs.source = f.read<int32_t>("/pairs/source");
  if (f.exists("/images")) {
    c.image_width = f.read<int32_t>("/images/width");
    c.image_height = f.read<int32_t>("/images/height");
    c.image_names = read_ragged(f, "/images/names");
    if (opt.images) {
      c.images = read_ragged(f, "/images");
    } else {
      // Offsets only: the bytes stay on disk, rows keep their meaning.
      c.images.offsets = f.read<uint64_t>("/images/offsets");
      const auto sh = f.shape("/images/bytes", 1);
      f.check_dtype("/images/bytes", DType::U8);
      check_offsets(c.images.offsets, uint64_t(sh[0]), path + ": /images");
      c.images.bytes.clear();
    }
  }
  if (opt.tokens && f.exists("/tokens")) {
    CorpusTokens t;
    t.en = read_ragged_ids(f, "/tokens/en");
    t.xx = read_ragged_ids(f, "/tokens/xx");
    t.tokenizer_fingerprint = f.read_string_attr("/tokens", "tokenizer_fingerprint");
    t.vocab_size = f.read_int_attr("/tokens", "vocab_size");
    c.tokens = std::move(t);
  }
  if (opt.teacher && f.exists("/teacher")) {
    CorpusTeacher t;
    const auto sh = f.shape("/teacher/embeddings", 2);
    t.dim = sh[1];
    XV_CHECK(sh[0] == int64_t(c.pairs.en.size()), "{}: /teacher/embeddings has {} rows, the corpus {} pairs", path,
             sh[0], c.pairs.en.size());
    t.embeddings = f.read<float>("/teacher/embeddings", 2);
    t.model_fingerprint = f.read_string_attr("/teacher", "model_fingerprint");
    t.corpus_fingerprint = f.read_string_attr("/teacher", "corpus_fingerprint");
    c.teacher = std::move(t);
  }
  // Without the image bytes, the offsets were checked against the length on disk above.
  check_corpus(c, path, opt.images ? std::nullopt : std::optional<uint64_t>(c.images.offsets.back()));
  return c;
}

std::vector<std::string> validate_corpus(const Corpus& c, const std::string& path, const std::string& tokenizer_json,
                                         size_t max_problems) {
  std::vector<std::string> out;
  auto add = [&](std::string s) {
    if (out.size() < max_problems) out.push_back(path + ": " + std::move(s));
  };
  const bool images_held = c.images.offsets.empty() || c.images.bytes.size() == c.images.offsets.back();
  try {
    check_corpus(c, path, images_held ? std::nullopt : std::optional<uint64_t>(c.images.offsets.back()));
  } catch (const Error& e) {
    out.push_back(e.what());
    return out;
  }
  for (const auto& [r, name] : {std::pair{&c.text_en, "/text/en"}, std::pair{&c.text_xx, "/text/xx"},
                                std::pair{&c.sources, "/sources"}, std::pair{&c.image_names, "/images/names"}})
    for (size_t i = 0; i < r->size(); ++i) {
      const std::string_view s = r->at(i);
      if (const size_t at = tok::utf8_invalid_at(s); at != std::string_view::npos)
        add(fmt::format("{}: row {}: invalid UTF-8 at byte {}", name, i, at));
      else if (s.empty() && name[1] == 't')
        add(fmt::format("{}: row {}: empty text", name, i));
    }
  if (images_held)
    for (size_t i = 0; i < c.images.size(); ++i) {
      const std::string_view b = c.images.at(i);
      try {
        const Image img = decode_image_bytes(reinterpret_cast<const uint8_t*>(b.data()), b.size(),
                                             std::string(c.image_names.at(i)));
        if (img.width != c.image_width[i] || img.height != c.image_height[i])
          add(fmt::format("/images: row {} ({}): decodes to {}x{}, recorded {}x{}", i, c.image_names.at(i), img.width,
                          img.height, c.image_width[i], c.image_height[i]));
      } catch (const Error& e) {
        add(fmt::format("/images: row {} ({}): does not decode: {}", i, c.image_names.at(i), e.what()));
      }
    }
  else
    add("/images: the image bytes were not read, images not checked");
  if (c.tokens) {
    for (const auto& [r, name] : {std::pair{&c.tokens->en, "/tokens/en"}, std::pair{&c.tokens->xx, "/tokens/xx"}})
      for (size_t i = 0; i < r->ids.size(); ++i)
        if (r->ids[i] < 0 || r->ids[i] >= c.tokens->vocab_size) {
          // The last row starting at or before i (a binary search: a wrong vocab_size flags every id).
          const size_t row = size_t(std::upper_bound(r->offsets.begin(), r->offsets.end(), uint64_t(i)) -
                                    r->offsets.begin()) - 1;
          add(fmt::format("{}: row {}: token id {} outside the vocabulary [0, {})", name, row, r->ids[i],
                          c.tokens->vocab_size));
        }
    if (!tokenizer_json.empty()) {
      const std::string fp = tokenizer_fingerprint(tokenizer_json);
      if (fp != c.tokens->tokenizer_fingerprint)
        add(fmt::format("/tokens: made by the tokenizer {}, but {} is {}", c.tokens->tokenizer_fingerprint,
                        tokenizer_json, fp));
    }
  }
  if (images_held) {  // the image bytes are part of the hash
    const std::string fp = corpus_fingerprint(c);
    if (fp != c.meta.fingerprint)
      add(fmt::format("root attribute 'fingerprint' is {}, the contents hash to {} (modified after writing?)",
                      c.meta.fingerprint, fp));
  }
  if (c.teacher && c.teacher->corpus_fingerprint != c.meta.fingerprint)
    add(fmt::format("/teacher: computed for the corpus {}, this one is {}", c.teacher->corpus_fingerprint,
                    c.meta.fingerprint));
  return out;
}

void write_corpus_teacher(const std::string& path, const CorpusTeacher& t) {
  {
    // Checked on the original, so that errors name it rather than the temporary copy.
    const h5::File f = h5::File::open(path);
    const CorpusMeta m = read_corpus_meta(f);
    const int64_t P = f.shape("/pairs/en", 1)[0];
    XV_CHECK(t.dim > 0 && int64_t(t.embeddings.size()) == P * t.dim,
             "{}: teacher embeddings of {} values do not make ({}, {})", path, t.embeddings.size(), P, t.dim);
    XV_CHECK(t.corpus_fingerprint == m.fingerprint, "{}: the teacher embeddings were computed for corpus {}, this is {}",
             path, t.corpus_fingerprint, m.fingerprint);
  }
  const fs::path target = fs::absolute(path);
  const std::string tmp =
      (target.parent_path() / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  std::error_code ec;
  fs::copy_file(target, tmp, fs::copy_options::overwrite_existing, ec);
  XV_CHECK(!ec, "{}: cannot copy to {}: {}", path, tmp, ec.message());
  try {
    h5::File f = h5::File::open(tmp, true);
    if (f.exists("/teacher")) f.remove("/teacher");
    write_teacher_block(f, t);
    f.close();
    fs::rename(tmp, target, ec);
    XV_CHECK(!ec, "{}: cannot replace it with the written corpus {}: {}", path, tmp, ec.message());
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
}

}  // namespace xv
