// The parallel corpus (docs/corpus-format.md, format version 1) in memory, and its HDF5 file: writer,
// whole-file reader and the fingerprint of its contents. Builders (data/build_*.cpp) fill a Corpus and write
// it; `corpus split`, `eval` and the tests read one whole; training streams it (data/corpus_stream.h).
//
// Every HDF5 call of the project goes through data/hdf5_file.{h,cpp}; the HDF5 library is not thread-safe,
// so no two threads may use these functions at once (the streaming reader keeps them on its I/O thread).
#pragma once
#include <cstdint>
#include <optional>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace xv {

namespace h5 {
class File;
}

inline constexpr const char* kCorpusFormatName = "xvlm2vec-corpus";
inline constexpr int64_t kCorpusFormatVersion = 1;

// Ragged UTF-8 strings (or bytes): element i is bytes[offsets[i], offsets[i+1]).
struct Ragged {
  std::string bytes;
  std::vector<uint64_t> offsets{0};  // (n+1), offsets[0] = 0, non-decreasing, back() = bytes.size()

  size_t size() const { return offsets.size() - 1; }
  std::string_view at(size_t i) const { return std::string_view(bytes).substr(offsets[i], offsets[i + 1] - offsets[i]); }
  size_t push(std::string_view s) {
    bytes.append(s);
    offsets.push_back(bytes.size());
    return offsets.size() - 2;
  }
};

// Ragged token ids: row i is ids[offsets[i], offsets[i+1]).
struct RaggedIds {
  std::vector<int32_t> ids;
  std::vector<uint64_t> offsets{0};  // (n+1)

  size_t size() const { return offsets.size() - 1; }
  size_t push(const std::vector<int32_t>& row) {
    ids.insert(ids.end(), row.begin(), row.end());
    offsets.push_back(ids.size());
    return offsets.size() - 2;
  }
};

struct CorpusMeta {
  int64_t format_version = kCorpusFormatVersion;
  std::vector<std::string> languages;  // the codes /pairs/lang indexes, e.g. {"it","es","fr","de"}
  std::string source;                  // what it was built from ("gettext", "tsv", "xmmeb-jsonl", ...)
  std::string created_by;              // the command line that made it
  std::string created_at;              // ISO 8601 UTC
  std::string fingerprint;             // corpus_fingerprint() of the contents, recorded at write time
};

struct CorpusPairs {  // one entry per pair, all (P)
  std::vector<int64_t> en;      // row of text_en
  std::vector<int64_t> xx;      // row of text_xx
  std::vector<uint8_t> lang;    // index into meta.languages
  std::vector<int64_t> image;   // row of images, -1 = none (the same image serves both sides)
  std::vector<int32_t> source;  // row of sources (e.g. the gettext catalog, the JSONL file)

  size_t size() const { return en.size(); }
};

// Optional pre-tokenised text: ids of Tokenizer::encode(text, add_special_tokens = true) for every row of
// text_en and text_xx, made by the tokenizer whose tokenizer_fingerprint() is recorded.
struct CorpusTokens {
  std::string tokenizer_fingerprint;
  int64_t vocab_size = 0;
  RaggedIds en, xx;
};

// Optional teacher block: the teacher's embedding of each pair's English side (with its image), (P, D).
struct CorpusTeacher {
  std::string model_fingerprint;   // teacher_cache.h: model_fingerprint(model_dir)
  std::string corpus_fingerprint;  // the corpus's fingerprint when it was computed
  int64_t dim = 0;
  std::vector<float> embeddings;  // (P, dim)
};

struct Corpus {
  CorpusMeta meta;
  Ragged text_en, text_xx;  // English texts; other-language texts (all languages in one pool)
  Ragged sources;           // source names
  CorpusPairs pairs;
  Ragged images;            // encoded image files (PNG/JPEG bytes), as found
  Ragged image_names;       // where each image came from (relative path), for messages
  std::vector<int32_t> image_width, image_height;  // (M) decoded size
  std::optional<CorpusTokens> tokens;
  std::optional<CorpusTeacher> teacher;

  // Appends a pair (texts are appended to the pools, not deduplicated); returns its row.
  size_t add_pair(std::string_view en, std::string_view xx, const std::string& lang, int64_t image, int32_t source);
  // Row of `lang` in meta.languages, appended when new.
  uint8_t lang_code(const std::string& lang);
};

// A hash of every pair's texts, language, image bytes and source, in order (fnv1a64, "fnv1a64:..." hex):
// what `train --resume` compares, what a teacher block records, and what `corpus validate` recomputes.
std::string corpus_fingerprint(const Corpus& c);
// The same for a Corpus read without its image bytes: `image_bytes(i)` returns image i's bytes (read on demand).
std::string corpus_fingerprint(const Corpus& c, const std::function<std::string(int64_t)>& image_bytes);
// The fingerprint of a tokenizer.json (a hash of its bytes), recorded with pre-tokenised text.
std::string tokenizer_fingerprint(const std::string& tokenizer_json_path);

// Writes `c` to `path` (format version 1), through a temporary file renamed at the end: an interrupted
// write leaves no file behind. Sets meta.fingerprint. Checks the Corpus is consistent first (rows in range,
// offsets monotonic, one image size per image, tokens and teacher of the right length).
void write_corpus(const std::string& path, Corpus& c);
// The bytes of every dataset write_corpus stores for `c` (texts, images, tables, tokens, teacher), before
// HDF5's own structures: what a disk-space check before writing asks for.
uint64_t corpus_payload_bytes(const Corpus& c);

// The root attributes of an open corpus file, checked (format name, version, languages, fingerprint).
CorpusMeta read_corpus_meta(const h5::File& f);

struct ReadCorpusOptions {
  bool images = true;   // read the image bytes (sizes and names are always read)
  bool tokens = true;   // read /tokens when present
  bool teacher = true;  // read /teacher when present
};
// Reads a whole corpus; checks the structure (format name and version, every required dataset with its
// dtype and rank, lengths that agree, offsets in range and monotonic, rows in range). Errors name the
// file and the dataset or attribute. Does not decode images or check UTF-8 (validate_corpus does).
Corpus read_corpus(const std::string& path, const ReadCorpusOptions& opt = {});

// Checks a corpus read with everything: structure (as read_corpus), UTF-8 of every text, every image
// decodes to its recorded size, token ids inside the vocabulary, the recorded fingerprint. When
// `tokenizer_json` is given, also that the tokens were made by that tokenizer. Returns the problems found,
// one line each naming the dataset and row (empty: valid); stops listing after `max_problems`.
std::vector<std::string> validate_corpus(const Corpus& c, const std::string& path,
                                         const std::string& tokenizer_json = "", size_t max_problems = 100);

// Writes (or replaces) the /teacher block of an existing corpus file: copies it to a temporary file, adds
// the block, renames over the original (the original stays intact until the rename).
void write_corpus_teacher(const std::string& path, const CorpusTeacher& t);

}  // namespace xv
