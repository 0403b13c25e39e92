// xvlm2vec corpus build: a corpus (docs/corpus-format.md) from gettext catalogs, TSV, xMMEB-train JSONL or the
// Debian package description translations (DDTP)
// (docs/corpus-build.md), optionally pre-tokenised.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "core/file_util.h"
#include "core/resources.h"
#include "tokenizer/tokenizer.h"
#include "data/builders.h"
#include "data/corpus.h"
#include "launch/cli_checks.h"
#include "launch/commands.h"

namespace xv::cli {

namespace fs = std::filesystem;

namespace {

struct BuildArgs {
  std::string from, out, locale_dir = "/usr/share/locale", lang, image_root, tokenizer;
  std::vector<std::string> langs = {"it", "es", "fr", "de"}, catalogs, inputs;
  std::vector<std::string> exclude_catalogs = {"iso_*", "kgeography"};
  // -1: the builder's default for --from (TextFilter::for_gettext / for_user_data).
  int64_t min_chars = -1, max_chars = -1, min_letters = -1, min_words = -1;
  double max_length_ratio = -1;
  bool quiet = false;
};

std::string utc_now_iso8601() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The command line as given, from what CLI11 parsed (the runner does not see argv): every option that was
// set, with its values, shell-quoted where needed.
std::string command_line(const CLI::App& sub) {
  auto quote = [](const std::string& s) {
    if (!s.empty() && s.find_first_of(" \t\n'\"\\$`*?[]{}()<>|&;#~") == std::string::npos) return s;
    std::string q = "'";
    for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string out = "xvlm2vec corpus build";
  for (const CLI::Option* o : sub.get_options()) {
    if (o->count() == 0 || o->get_name() == "--help") continue;
    out += " " + o->get_name();
    if (o->get_type_size() == 0) continue;  // a flag
    for (const auto& v : o->results()) out += " " + quote(v);
  }
  return out;
}

TextFilter filter_from(const BuildArgs& a, TextFilter f) {
  if (a.min_chars >= 0) f.min_chars = a.min_chars;
  if (a.max_chars >= 0) f.max_chars = a.max_chars;
  if (a.min_letters >= 0) f.min_letters = a.min_letters;
  if (a.min_words >= 0) f.min_words = a.min_words;
  if (a.max_length_ratio >= 0) f.max_length_ratio = a.max_length_ratio;
  return f;
}

void check_options(const BuildArgs& a, const CLI::App& sub) {
  auto given = [&](const char* name) { return sub.get_option(name)->count() > 0; };
  const bool gettext = a.from == "gettext";
  if (gettext) {
    XV_CHECK(a.inputs.empty(), "--input: not used with --from gettext (the catalogs are found under --locale-dir)");
    XV_CHECK(!given("--lang"), "--lang: not used with --from gettext (use --langs)");
    require_dir(a.locale_dir, "folder (--locale-dir)");
    XV_CHECK(!a.langs.empty(), "--langs: at least one language code expected");
  } else if (a.from == "ddtp") {
    XV_CHECK(!a.inputs.empty(), "--input: the Translation-en index and at least one Translation-<lang> index are "
                                "required with --from ddtp (scripts/install-ddtp.sh fetches them)");
    for (const auto& in : a.inputs) require_regular_file(in, "file (--input)");
    for (const char* o : {"--locale-dir", "--catalogs", "--exclude-catalogs", "--lang"})
      XV_CHECK(!given(o), "{}: not used with --from ddtp (each index names its language; --langs picks them)", o);
  } else {
    XV_CHECK(!a.inputs.empty(), "--input: at least one input file is required with --from {}", a.from);
    for (const auto& in : a.inputs) require_regular_file(in, "file (--input)");
    for (const char* o : {"--locale-dir", "--langs", "--catalogs", "--exclude-catalogs"})
      XV_CHECK(!given(o), "{}: only used with --from gettext", o);
    XV_CHECK(a.from == "xmmeb" || !a.lang.empty(), "--lang: the language of the translations is required with --from tsv");
  }
  XV_CHECK(a.from == "xmmeb" || a.image_root.empty(), "--image-root: only used with --from xmmeb");
  if (!a.image_root.empty()) require_dir(a.image_root, "folder (--image-root)");
  check_output_file(a.out, "--out");
}

// Progress on stderr: one line rewritten in place on a terminal, a line per tenth of the work otherwise.
BuildProgress make_progress(bool quiet) {
  if (quiet) return {};
  const bool tty = ::isatty(2);
  auto last_tenth = std::make_shared<int64_t>(-1);
  return [tty, last_tenth](std::string_view what, int64_t done, int64_t total) {
    const int pct = total > 0 ? int(100 * done / total) : 0;
    if (tty) {
      std::fprintf(stderr, "\rcorpus build: %3d%% %-60.60s", pct, std::string(what).c_str());
      if (total > 0 && done >= total) std::fprintf(stderr, "\n");
      std::fflush(stderr);
      return;
    }
    if (pct / 10 == *last_tenth) return;
    *last_tenth = pct / 10;
    std::fprintf(stderr, "corpus build: %3d%% %s\n", pct, std::string(what).c_str());
  };
}

// Corpus::tokens: the ids of every text row, made by `tok`, loaded from `path`.
void tokenize(Corpus& c, const Tokenizer& tok_ref, const std::string& path, bool quiet) {
  const Tokenizer* tok = &tok_ref;
  CorpusTokens t;
  t.tokenizer_fingerprint = tokenizer_fingerprint(path);
  t.vocab_size = tok->vocab_size();
  for (size_t i = 0; i < c.text_en.size(); ++i) t.en.push(tok->encode(c.text_en.at(i), true));
  for (size_t i = 0; i < c.text_xx.size(); ++i) t.xx.push(tok->encode(c.text_xx.at(i), true));
  if (!quiet)
    std::fprintf(stderr, "corpus build: tokenised %zu English and %zu other texts (%zu + %zu ids)\n", c.text_en.size(),
                 c.text_xx.size(), t.en.ids.size(), t.xx.ids.size());
  c.tokens = std::move(t);
}

// The bytes of what a build reads: the catalogs of --langs under --locale-dir (those of --catalogs), or the
// --input files (images of xmmeb lines come on top, each bounded by the image decoder's limits).
uint64_t input_bytes(const BuildArgs& a) {
  uint64_t n = 0;
  std::error_code ec;
  if (a.from != "gettext") {
    for (const auto& in : a.inputs) n += uint64_t(fs::file_size(in, ec)), ec.clear();
    return n;
  }
  for (const auto& lang : a.langs) {
    const fs::path dir = fs::path(a.locale_dir) / lang / "LC_MESSAGES";
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const fs::path& f = it->path();
      if (f.extension() != ".mo" || !it->is_regular_file(ec)) continue;
      if (!a.catalogs.empty() &&
          std::find(a.catalogs.begin(), a.catalogs.end(), f.stem().string()) == a.catalogs.end())
        continue;
      n += uint64_t(it->file_size(ec));
    }
    ec.clear();
  }
  return n;
}

int run_build(const BuildArgs& a, const CLI::App& sub) {
  const auto t0 = std::chrono::steady_clock::now();
  check_options(a, sub);
  // Loaded first: a bad tokenizer file should not cost a whole build.
  std::unique_ptr<Tokenizer> tok;
  if (!a.tokenizer.empty()) tok = Tokenizer::from_file(a.tokenizer);
  // The build holds every text it keeps, with the indexes that deduplicate them: about twice what it reads.
  const uint64_t in_bytes = input_bytes(a);
  require_memory(2 * in_bytes, fmt::format("corpus build (--from {}: {} of input)", a.from, human_bytes(in_bytes)),
                 ": build from fewer inputs (--langs, --catalogs, --input) and join the parts in training, or use a "
                 "machine with more memory");
  BuildReport report;
  const BuildProgress progress = make_progress(a.quiet);
  Corpus c;
  if (a.from == "gettext") {
    GettextOptions o;
    o.locale_dir = a.locale_dir;
    o.langs = a.langs;
    o.catalogs = a.catalogs;
    o.exclude.clear();
    for (const auto& e : a.exclude_catalogs)
      if (!e.empty() && e != "none") o.exclude.push_back(e);
    o.filter = filter_from(a, TextFilter::for_gettext());
    c = build_gettext(o, &report, progress);
  } else if (a.from == "ddtp") {
    DdtpOptions o;
    o.inputs = a.inputs;
    o.langs = a.langs;
    o.filter = filter_from(a, TextFilter::for_descriptions());
    c = build_ddtp(o, &report, progress);
  } else if (a.from == "tsv") {
    TsvOptions o;
    o.inputs = a.inputs;
    o.lang = a.lang;
    o.filter = filter_from(a, TextFilter::for_user_data());
    c = build_tsv(o, &report, progress);
  } else {
    XmmebOptions o;
    o.inputs = a.inputs;
    o.lang = a.lang;
    o.image_root = a.image_root;
    o.filter = filter_from(a, TextFilter::for_user_data());
    c = build_xmmeb(o, &report, progress);
  }
  if (!a.quiet) std::fprintf(stderr, "%s", format_build_report(report).c_str());
  if (c.pairs.size() == 0) {
    // Why, in the message itself (the report is not printed with --quiet): the first skipped inputs and the
    // first example of every drop reason, each naming its file and line or catalog.
    std::string why;
    for (size_t i = 0; i < report.inputs_skipped.size() && i < 3; ++i) why += "\n  skipped " + report.inputs_skipped[i];
    for (const auto& [reason, st] : report.dropped)
      why += fmt::format("\n  {} dropped: {}{}", st.count, reason, st.examples.empty() ? "" : ", e.g. " + st.examples[0]);
    fail("no pair was kept from --from {} ({} input(s) read, {} pair(s) seen): nothing written to {}{}", a.from,
         report.inputs_read, report.pairs_read, a.out, why);
  }
  if (tok) tokenize(c, *tok, a.tokenizer, a.quiet);
  c.meta.created_by = command_line(sub);
  c.meta.created_at = utc_now_iso8601();
  const uint64_t payload = corpus_payload_bytes(c);
  require_disk(a.out, payload + payload / 100 + (uint64_t(1) << 20),
               fmt::format("--out: the corpus ({} pairs, {} images)", c.pairs.size(), c.images.size()),
               ": free some space, or write it elsewhere");
  write_corpus(a.out, c);
  if (!a.quiet)
    std::fprintf(stderr, "corpus build: %zu pairs, %zu images, %.2f s -> %s\n", c.pairs.size(), c.images.size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), a.out.c_str());
  return 0;
}

}  // namespace

Runner add_corpus_build(CLI::App& corpus) {
  auto* b = corpus.add_subcommand("build", "Build a parallel corpus (HDF5) from gettext catalogs, TSV or xMMEB JSONL");
  auto a = std::make_shared<BuildArgs>();
  b->add_option("--from", a->from, "What to build from: gettext, tsv, xmmeb or ddtp")
      ->required()
      ->check(CLI::IsMember({"gettext", "tsv", "xmmeb", "ddtp"}));
  b->add_option("--out", a->out, "Output corpus file (.h5), written through a temporary file")->required();
  b->add_option("--locale-dir", a->locale_dir, "gettext: folder of <lang>/LC_MESSAGES/*.mo")
      ->default_val("/usr/share/locale");
  b->add_option("--langs", a->langs, "gettext, ddtp: language codes, in corpus order (ddtp: the translations taken)")
      ->delimiter(',')
      ->default_val(std::vector<std::string>{"it", "es", "fr", "de"});
  b->add_option("--catalogs", a->catalogs, "gettext: catalog names (without .mo) to read; default all")->delimiter(',');
  b->add_option("--exclude-catalogs", a->exclude_catalogs,
                "gettext: catalogs never read (names, or prefixes ending in *; 'none': none); default the "
                "evaluation-only iso_* and kgeography")
      ->delimiter(',')
      ->default_str("iso_*,kgeography");
  b->add_option("--input", a->inputs, "tsv, xmmeb, ddtp: input file (repeat for several; ddtp: Translation-en and "
                                      "Translation-<lang> indexes)");
  b->add_option("--lang", a->lang, "tsv: language of the translations; xmmeb: for lines without a \"lang\" field");
  b->add_option("--image-root", a->image_root, "xmmeb: folder image paths are relative to (default: the JSONL's)");
  b->add_option("--min-chars", a->min_chars, "Fewest characters on either side (gettext 5, others 1)")
      ->check(at_least(0));
  b->add_option("--max-chars", a->max_chars, "Most characters on either side, 0 = no limit (gettext 400, others 20000)")
      ->check(at_least(0));
  b->add_option("--min-letters", a->min_letters, "Fewest letters on either side (gettext 3, others 1)")
      ->check(at_least(0));
  b->add_option("--min-words", a->min_words, "Fewest words on the English side (gettext 2, others 1)")
      ->check(at_least(0));
  b->add_option("--max-length-ratio", a->max_length_ratio,
                "Longest side / shortest side in characters, 0 = no limit (gettext 3, others 0)")
      ->check(at_least(0));
  b->add_option("--tokenizer", a->tokenizer, "tokenizer.json: store the token ids of every text in the corpus")
      ->check(CLI::ExistingFile);
  b->add_flag("--quiet", a->quiet, "No progress and no report (errors are still printed)");
  return [b, a] {
    if (b->parsed()) return run_build(*a, *b);
    return -1;
  };
}

}  // namespace xv::cli
