// The corpus builders (`xvlm2vec corpus build`, docs/corpus-build.md): a Corpus of parallel pairs from
//   - GNU gettext catalogs (<locale_dir>/<lang>/LC_MESSAGES/*.mo): English UI strings and their translations;
//   - TSV files of "English<TAB>translation" lines;
//   - xMMEB-train JSONL ({"id", "text_en", "text_lang", "img_en", "img_lang"} per line) with its images;
//   - the Debian package description translations (DDTP: apt's Translation-<lang> indexes), aligned to the
//     English descriptions by their Description-md5.
// Each builder reads everything into memory, drops what fails its checks (counted per reason in the
// BuildReport, with a few examples), and returns the Corpus for write_corpus. The result depends only on the
// inputs and the options, never on the order a directory lists its files in.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "data/corpus.h"

namespace xv {

// Why a pair was dropped: the keys of BuildReport::dropped. A pair is counted once, for the first check it
// fails, in the order the builders run them (docs/corpus-build.md).
namespace drop_reason {
inline constexpr const char* kBadEncoding = "invalid text encoding";        // not UTF-8 / not in the charset
inline constexpr const char* kUntranslated = "untranslated (empty translation)";
inline constexpr const char* kEmptyAfterCleaning = "empty after cleaning";  // nothing but placeholders, markup
inline constexpr const char* kIdentical = "identical to the English";
inline constexpr const char* kTooShort = "too short";                       // either side, in characters
inline constexpr const char* kTooLong = "too long";                         // either side, in characters
inline constexpr const char* kTooFewLetters = "too few letters";            // either side
inline constexpr const char* kTooFewWords = "too few words";                // the English side
inline constexpr const char* kLengthRatio = "length ratio";                 // one side far longer than the other
inline constexpr const char* kDuplicate = "duplicate";                      // same English, translation, language (and image)
inline constexpr const char* kBadTsvLine = "not two tab-separated fields";
inline constexpr const char* kBadJson = "bad JSON";
inline constexpr const char* kBadField = "missing or mistyped field";
inline constexpr const char* kNoLanguage = "no language";
inline constexpr const char* kImagesDiffer = "img_en and img_lang differ";
inline constexpr const char* kImageMissing = "image missing";
inline constexpr const char* kImageUnreadable = "image unreadable";
inline constexpr const char* kPlaceholderNoImage = "image placeholder without image";
inline constexpr const char* kPlaceholderLost = "image placeholder missing in the translation";
inline constexpr const char* kNoEnglish = "no English description with its Description-md5";
inline constexpr const char* kParagraphsDiffer = "long description: other paragraph count than the English";
}  // namespace drop_reason

// The length and content filters, applied to the final texts (after cleaning and the trailing rule).
// A limit of 0 is no limit.
struct TextFilter {
  int64_t min_chars = 1;             // each side, in code points
  int64_t max_chars = 0;             // each side, in code points
  int64_t min_letters = 1;           // each side: code points of general category L*
  int64_t min_words = 1;             // the English side: space-separated pieces holding a letter
  double max_length_ratio = 0;       // longer side / shorter side, in code points
  bool drop_identical = false;       // translation equal to the English

  // gettext UI strings: short labels, identifiers and untranslated strings are the bulk of what to leave out.
  static TextFilter for_gettext() { return {5, 400, 3, 2, 3.0, true}; }
  // Package descriptions: sentences and paragraphs; one-word summaries and untranslated text are left out.
  static TextFilter for_descriptions() { return {5, 2000, 3, 2, 3.0, true}; }
  // TSV and xMMEB are curated data: only empty and absurdly long texts are left out.
  static TextFilter for_user_data() { return {1, 20000, 1, 1, 0, false}; }
};

struct GettextOptions {
  std::string locale_dir = "/usr/share/locale";
  std::vector<std::string> langs = {"it", "es", "fr", "de"};
  std::vector<std::string> catalogs;  // catalog names without ".mo" to read; empty: every catalog
  // Catalogs never read (a name, or a prefix ending in '*'): by default the evaluation-only ones, the names the
  // multimodal suite evaluates on (iso-codes' country, language and currency names; KGeography's region names).
  std::vector<std::string> exclude = {"iso_*", "kgeography"};
  TextFilter filter = TextFilter::for_gettext();
};

struct TsvOptions {
  std::vector<std::string> inputs;  // files of "English<TAB>translation" lines
  std::string lang;                 // the language of every translation
  TextFilter filter = TextFilter::for_user_data();
};

struct XmmebOptions {
  std::vector<std::string> inputs;  // JSONL files
  std::string lang;                 // for lines without a "lang" field
  std::string image_root;           // image paths are relative to it; empty: each JSONL's folder
  TextFilter filter = TextFilter::for_user_data();
};

struct DdtpOptions {
  std::vector<std::string> inputs;                    // Translation-en and Translation-<lang> index files
  std::vector<std::string> langs = {"it", "es", "fr", "de"};  // the translations to take (empty: all)
  TextFilter filter = TextFilter::for_descriptions();
};

struct DropStats {
  int64_t count = 0;
  std::vector<std::string> examples;  // the first few: where (file:line or catalog) and the texts
};

struct BuildReport {
  std::string source;                      // "gettext", "tsv", "xmmeb-jsonl"
  int64_t inputs_read = 0;                 // catalogs or files read
  std::vector<std::string> inputs_skipped;  // "what: why", for catalogs or folders that could not be used
  int64_t pairs_read = 0;                  // candidate pairs seen (catalog entries, lines)
  int64_t pairs_kept = 0;
  std::map<std::string, int64_t> kept_per_language;
  std::map<std::string, DropStats> dropped;  // by reason (drop_reason::*)
  int64_t images = 0;                       // distinct images stored

  static constexpr size_t kMaxExamples = 3;
  void drop(const std::string& reason, const std::string& example);
  int64_t dropped_total() const;
};

// Called as inputs are read: what is being read, and how far (done of total, in the unit the builder
// counts: catalogs for gettext, bytes for TSV and JSONL).
using BuildProgress = std::function<void(std::string_view what, int64_t done, int64_t total)>;

// Throws xv::Error for what makes the whole build impossible (a missing folder or input file, an empty
// file, a missing language); everything else is a dropped pair or a skipped catalog in the report.
Corpus build_gettext(const GettextOptions& opt, BuildReport* report, const BuildProgress& progress = {});
Corpus build_tsv(const TsvOptions& opt, BuildReport* report, const BuildProgress& progress = {});
Corpus build_xmmeb(const XmmebOptions& opt, BuildReport* report, const BuildProgress& progress = {});
Corpus build_ddtp(const DdtpOptions& opt, BuildReport* report, const BuildProgress& progress = {});

// The report as text: inputs read and skipped, pairs read and kept (per language), then every drop reason
// with its count and examples.
std::string format_build_report(const BuildReport& r);

}  // namespace xv
