// The corpus builders: the .mo reader, UI-string cleaning, the trailing rule, and the gettext, TSV and
// xMMEB builders. Expected values are what the fixture sources say (tests/fixtures/corpus_build/po/*.po,
// xmmeb/train.jsonl; compiled by tools/make_corpus_fixtures.sh), worked out by hand from the rules of
// docs/corpus-build.md.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include "core/error.h"
#include "data/builders.h"
#include "data/corpus.h"
#include "data/mo_catalog.h"
#include "data/text_clean.h"

namespace fs = std::filesystem;
using namespace xv;

namespace {

const std::string kFix = std::string(XV_FIXTURES) + "/corpus_build";
const std::string kLocale = kFix + "/locale";

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

// A fresh folder under the system temp folder, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() / (std::string("xv_corpus_build_") + info->test_suite_name() + "_" + info->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& p) const { return (path / p).string(); }
};

// A little-endian .mo with the given (original, translation) strings, in the order given (msgfmt sorts;
// the reader does not care): the cases msgfmt will not write, and the base of the corrupt variants.
std::string make_mo(const std::vector<std::pair<std::string, std::string>>& entries) {
  const uint32_t n = uint32_t(entries.size());
  const uint32_t orig = 28, trans = orig + 8 * n, strings = trans + 8 * n;
  std::string out(strings, '\0');
  auto put = [&](uint32_t at, uint32_t v) {
    for (int k = 0; k < 4; ++k) out[at + uint32_t(k)] = char((v >> (8 * k)) & 0xff);
  };
  put(0, 0x950412de);
  put(4, 0);
  put(8, n);
  put(12, orig);
  put(16, trans);
  for (int side = 0; side < 2; ++side)
    for (uint32_t i = 0; i < n; ++i) {
      const std::string& s = side == 0 ? entries[i].first : entries[i].second;
      put((side == 0 ? orig : trans) + 8 * i, uint32_t(s.size()));
      put((side == 0 ? orig : trans) + 8 * i + 4, uint32_t(out.size()));
      out += s;
      out += '\0';
    }
  return out;
}

// Cleans `s` when it is valid UTF-8 (the builders' precondition), else returns it.
std::string clean_ui_text_if_utf8(const std::string& s) {
  CharsetConverter utf8("UTF-8");
  std::string t;
  return utf8.to_utf8(s, &t) ? clean_ui_text(t) : s;
}

const MoEntry* find_entry(const MoCatalog& cat, const std::string& msgid, const std::string& context = "") {
  for (const auto& e : cat.entries)
    if (e.msgid == msgid && e.context == context) return &e;
  return nullptr;
}

// Every pair of a corpus as (English, translation, language, source), for order-free comparisons.
using PairTuple = std::tuple<std::string, std::string, std::string, std::string>;
std::set<PairTuple> pair_set(const Corpus& c) {
  std::set<PairTuple> out;
  for (size_t i = 0; i < c.pairs.size(); ++i)
    out.emplace(std::string(c.text_en.at(size_t(c.pairs.en[i]))), std::string(c.text_xx.at(size_t(c.pairs.xx[i]))),
                c.meta.languages.at(c.pairs.lang[i]), std::string(c.sources.at(size_t(c.pairs.source[i]))));
  return out;
}

void expect_same_corpus(const Corpus& a, const Corpus& b) {
  EXPECT_EQ(a.meta.languages, b.meta.languages);
  EXPECT_EQ(a.meta.source, b.meta.source);
  EXPECT_EQ(a.text_en.bytes, b.text_en.bytes);
  EXPECT_EQ(a.text_en.offsets, b.text_en.offsets);
  EXPECT_EQ(a.text_xx.bytes, b.text_xx.bytes);
  EXPECT_EQ(a.text_xx.offsets, b.text_xx.offsets);
  EXPECT_EQ(a.sources.bytes, b.sources.bytes);
  EXPECT_EQ(a.pairs.en, b.pairs.en);
  EXPECT_EQ(a.pairs.xx, b.pairs.xx);
  EXPECT_EQ(a.pairs.lang, b.pairs.lang);
  EXPECT_EQ(a.pairs.image, b.pairs.image);
  EXPECT_EQ(a.pairs.source, b.pairs.source);
  EXPECT_EQ(a.images.bytes, b.images.bytes);
  EXPECT_EQ(a.image_names.bytes, b.image_names.bytes);
  EXPECT_EQ(a.image_width, b.image_width);
  EXPECT_EQ(a.image_height, b.image_height);
}

int64_t dropped(const BuildReport& r, const char* reason) {
  const auto it = r.dropped.find(reason);
  return it == r.dropped.end() ? 0 : it->second.count;
}

void expect_error_containing(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no xv::Error thrown";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\nlacks: " << p;
  }
}

// ---------------------------------------------------------------------------------------------------------
// .mo reader

TEST(MoCatalog, ReadsEntriesContextAndPlurals) {
  const MoCatalog cat = read_mo_catalog(kLocale + "/it/LC_MESSAGES/alpha.mo");
  EXPECT_FALSE(cat.big_endian);
  EXPECT_EQ(cat.charset, "UTF-8");
  EXPECT_NE(cat.header.find("Plural-Forms: nplurals=2;"), std::string::npos);
  ASSERT_EQ(cat.entries.size(), 10u);  // alpha.it.po: 10 messages besides the header
  const MoEntry* open = find_entry(cat, "Open the file");
  ASSERT_NE(open, nullptr);
  EXPECT_EQ(open->msgstr, std::vector<std::string>{"Apri il file"});
  EXPECT_EQ(find_entry(cat, "Save the document"), nullptr);  // it has a context
  const MoEntry* save = find_entry(cat, "Save the document", "menu");
  ASSERT_NE(save, nullptr);
  EXPECT_EQ(save->msgstr, std::vector<std::string>{"Salva il documento"});
  const MoEntry* plural = find_entry(cat, "%d file copied");
  ASSERT_NE(plural, nullptr);
  EXPECT_EQ(plural->msgid_plural, "%d files copied");
  EXPECT_EQ(plural->msgstr, (std::vector<std::string>{"%d file copiato", "%d file copiati"}));
  const MoEntry* cannot = find_entry(cat, "Cannot open '%s': %s\n");
  ASSERT_NE(cannot, nullptr);
  EXPECT_EQ(cannot->msgstr, std::vector<std::string>{"Impossibile aprire «%s»: %s\n"});
}

TEST(MoCatalog, BigEndianReadsTheSame) {
  const MoCatalog le = read_mo_catalog(kLocale + "/it/LC_MESSAGES/alpha.mo");
  const MoCatalog be = read_mo_catalog(kFix + "/alpha.it.be.mo");
  EXPECT_TRUE(be.big_endian);
  EXPECT_EQ(be.header, le.header);
  ASSERT_EQ(be.entries.size(), le.entries.size());
  for (size_t i = 0; i < le.entries.size(); ++i) {
    EXPECT_EQ(be.entries[i].context, le.entries[i].context);
    EXPECT_EQ(be.entries[i].msgid, le.entries[i].msgid);
    EXPECT_EQ(be.entries[i].msgid_plural, le.entries[i].msgid_plural);
    EXPECT_EQ(be.entries[i].msgstr, le.entries[i].msgstr);
  }
}

TEST(MoCatalog, Latin1CatalogConverts) {
  const MoCatalog cat = read_mo_catalog(kLocale + "/de/LC_MESSAGES/alpha.mo");
  EXPECT_EQ(cat.charset, "ISO-8859-1");
  const MoEntry* open = find_entry(cat, "Open the file");
  ASSERT_NE(open, nullptr);
  EXPECT_EQ(open->msgstr[0], "Datei \xf6""ffnen");  // stored as written: one byte for the o-umlaut
  CharsetConverter conv(cat.charset);
  EXPECT_FALSE(conv.identity());
  std::string utf8;
  ASSERT_TRUE(conv.to_utf8(open->msgstr[0], &utf8));
  EXPECT_EQ(utf8, "Datei öffnen");
}

TEST(MoCatalog, CharsetConverterChecks) {
  expect_error_containing([] { CharsetConverter c("XX-UNKNOWN"); }, {"XX-UNKNOWN"});
  CharsetConverter utf8("utf-8");
  EXPECT_TRUE(utf8.identity());
  std::string out;
  EXPECT_TRUE(utf8.to_utf8("caf\xc3\xa9", &out));
  EXPECT_EQ(out, "café");
  EXPECT_FALSE(utf8.to_utf8("caf\xe9", &out));  // Latin-1 bytes in a UTF-8 catalog
  CharsetConverter none("");                   // no charset in the header: taken as UTF-8
  EXPECT_TRUE(none.identity());
}

TEST(MoCatalog, HeaderCharset) {
  EXPECT_EQ(header_charset("Project-Id-Version: x\nContent-Type: text/plain; charset=UTF-8\n"), "UTF-8");
  EXPECT_EQ(header_charset("content-type: text/plain; charset=iso-8859-15; x=y\n"), "iso-8859-15");
  EXPECT_EQ(header_charset("Content-Type: text/plain\n"), "");
  EXPECT_EQ(header_charset(""), "");
}

TEST(MoCatalog, EveryTruncationIsAnError) {
  const std::string path = kLocale + "/it/LC_MESSAGES/alpha.mo";
  const std::string bytes = read_bytes(path);
  ASSERT_GT(bytes.size(), 100u);
  for (size_t n = 0; n < bytes.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_THROW(parse_mo_catalog(bytes.substr(0, n), "cut.mo"), Error);
  }
  expect_error_containing([&] { parse_mo_catalog(bytes.substr(0, 20), "cut.mo"); }, {"cut.mo", "too short"});
  expect_error_containing([&] { parse_mo_catalog(bytes.substr(0, bytes.size() - 1), "cut.mo"); },
                          {"cut.mo", "translation string", "runs past the end"});
  // The committed truncated catalog, through the file reader.
  expect_error_containing([&] { read_mo_catalog(kLocale + "/es/LC_MESSAGES/broken.mo"); }, {"broken.mo"});
  expect_error_containing([&] { read_mo_catalog(kFix + "/no_such.mo"); }, {"no_such.mo", "does not exist"});
}

TEST(MoCatalog, CorruptVariantsAreErrors) {
  const std::string good = make_mo({{"", "Content-Type: text/plain; charset=UTF-8\n"}, {"Hello there", "Ciao"}});
  const MoCatalog cat = parse_mo_catalog(good, "good.mo");
  ASSERT_EQ(cat.entries.size(), 1u);
  EXPECT_EQ(cat.entries[0].msgstr, std::vector<std::string>{"Ciao"});

  auto patched = [&](size_t at, uint32_t v) {
    std::string b = good;
    for (int k = 0; k < 4; ++k) b[at + size_t(k)] = char((v >> (8 * k)) & 0xff);
    return b;
  };
  expect_error_containing([&] { parse_mo_catalog(patched(0, 0x12345678), "m.mo"); }, {"m.mo", "magic"});
  expect_error_containing([&] { parse_mo_catalog(patched(4, 2u << 16), "m.mo"); }, {"m.mo", "revision"});
  expect_error_containing([&] { parse_mo_catalog(patched(8, 0x10000000), "m.mo"); }, {"m.mo", "original string table"});
  expect_error_containing([&] { parse_mo_catalog(patched(16, 0xfffffff0), "m.mo"); }, {"m.mo", "translation string table"});
  // Entry 1 of the original table: its length, then its offset.
  expect_error_containing([&] { parse_mo_catalog(patched(28 + 8, 0xffffffff), "m.mo"); },
                          {"m.mo", "original string 1", "runs past the end"});
  expect_error_containing([&] { parse_mo_catalog(patched(28 + 12, 0xfffffff0), "m.mo"); },
                          {"m.mo", "original string 1"});
  // A string whose NUL is overwritten.
  std::string no_nul = good;
  no_nul[no_nul.find("Hello there") + 11] = 'X';
  expect_error_containing([&] { parse_mo_catalog(no_nul, "m.mo"); }, {"m.mo", "NUL"});
}

// Random byte changes anywhere in a real catalog: parsing either succeeds or is an xv::Error, never a crash
// (the sanitizer builds run this too).
TEST(MoCatalog, RandomCorruptionNeverCrashes) {
  const std::string bytes = read_bytes(kLocale + "/it/LC_MESSAGES/alpha.mo");
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return uint32_t(state >> 33);
  };
  for (int trial = 0; trial < 3000; ++trial) {
    std::string b = bytes;
    const int changes = 1 + int(next() % 4);
    for (int k = 0; k < changes; ++k) {
      // Half of the changes hit the header and tables, where offsets and lengths live.
      const size_t at = next() % 2 ? next() % std::min<size_t>(b.size(), 28 + 8 * 22) : next() % b.size();
      b[at] = char(next() & 0xff);
    }
    try {
      const MoCatalog cat = parse_mo_catalog(b, "fuzz.mo");
      for (const auto& e : cat.entries) (void)clean_ui_text_if_utf8(e.msgid);
    } catch (const Error&) {
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Cleaning

TEST(TextClean, FormatSpecifiers) {
  EXPECT_EQ(clean_ui_text("Copied %d files"), "Copied files");
  EXPECT_EQ(clean_ui_text("%-10s %lu bytes"), "bytes");
  EXPECT_EQ(clean_ui_text("%1$s is newer than %2$s"), "is newer than");
  EXPECT_EQ(clean_ui_text("Read %zu bytes from %s."), "Read bytes from.");
  EXPECT_EQ(clean_ui_text("Total %'d items, %5.2f%% done"), "Total items, done");
  EXPECT_EQ(clean_ui_text("%.*s and %*d"), "and");
  EXPECT_EQ(clean_ui_text("100%% complete"), "100% complete");
  EXPECT_EQ(clean_ui_text("Applying patch %%s with %d reject..."), "Applying patch with reject...");
  EXPECT_EQ(clean_ui_text("50 % des fichiers"), "50 % des fichiers");  // no space flag: prose
  EXPECT_EQ(clean_ui_text("Hello %(name)s, welcome"), "Hello, welcome");
  EXPECT_EQ(clean_ui_text("Delete {0} items from {folder}?"), "Delete items from?");
  EXPECT_EQ(clean_ui_text("Value {0:>8} and {}"), "Value and");
  EXPECT_EQ(clean_ui_text("Set $HOME or ${XDG_CONFIG_HOME}"), "Set or");
  EXPECT_EQ(clean_ui_text("Costs $5"), "Costs $5");
  EXPECT_EQ(clean_ui_text("%s: %s"), "");
  EXPECT_EQ(clean_ui_text("%s: invalid option"), "invalid option");
  EXPECT_EQ(clean_ui_text("%P: %B: warning: no symbol"), "warning: no symbol");  // binutils
  EXPECT_EQ(clean_ui_text("bad reloc %pA in %pB"), "bad reloc in");
  EXPECT_EQ(clean_ui_text("address 0x%08lx, id #%d, cost $%d"), "address, id, cost");
  EXPECT_EQ(clean_ui_text("relation \"%s.%s\" at %s:%d"), "relation at");
  EXPECT_EQ(clean_ui_text("queue is %.0f%% full"), "queue is full");
  EXPECT_EQ(clean_ui_text("user name (default: \"%s\")"), "user name (default)");
}

TEST(TextClean, PlaceholderQuotesAndPunctuation) {
  EXPECT_EQ(clean_ui_text("Cannot open '%s': %s\n"), "Cannot open:");
  EXPECT_EQ(clean_ui_text("Impossibile aprire «%s»: %s\n"), "Impossibile aprire:");
  EXPECT_EQ(clean_ui_text("Datei »%s« nicht gefunden"), "Datei nicht gefunden");
  EXPECT_EQ(clean_ui_text("File “%s” (%d bytes)"), "File (bytes)");
  EXPECT_EQ(clean_ui_text("File “%s” (%d)"), "File");
  EXPECT_EQ(clean_ui_text("removing `%s'"), "removing");
}

TEST(TextClean, Accelerators) {
  EXPECT_EQ(clean_ui_text("_File"), "File");
  EXPECT_EQ(clean_ui_text("Save _As…"), "Save As…");
  EXPECT_EQ(clean_ui_text("E_xit"), "Exit");
  EXPECT_EQ(clean_ui_text("&Open"), "Open");
  EXPECT_EQ(clean_ui_text("&Save && Quit"), "Save & Quit");
  EXPECT_EQ(clean_ui_text("Tom && Jerry"), "Tom && Jerry");  // no accelerator: a literal
  EXPECT_EQ(clean_ui_text("Set LC_ALL first"), "Set LC_ALL first");
  EXPECT_EQ(clean_ui_text("AT&T phones"), "AT&T phones");
  EXPECT_EQ(clean_ui_text("max_file_size too big"), "max_file_size too big");
  EXPECT_EQ(clean_ui_text("Datei (_F)"), "Datei");
  EXPECT_EQ(clean_ui_text("開く(_O)..."), "開く...");
  EXPECT_EQ(clean_ui_text("Q&amp;A"), "Q&A");  // an entity, not an accelerator
}

TEST(TextClean, MarkupControlsAndSpaces) {
  EXPECT_EQ(clean_ui_text("<b>Bold</b> text"), "Bold text");
  EXPECT_EQ(clean_ui_text("Line one<br/>Line two"), "Line one Line two");
  EXPECT_EQ(clean_ui_text("<span weight=\"bold\">Big</span> news"), "Big news");
  EXPECT_EQ(clean_ui_text("a < b > c"), "a < b > c");
  EXPECT_EQ(clean_ui_text("git reset <tree-ish> <file>"), "git reset <tree-ish> <file>");  // metavariables
  EXPECT_EQ(clean_ui_text("<tt>cmd</tt> and <BIG>text</BIG>"), "cmd and text");
  EXPECT_EQ(clean_ui_text("&lt;i&gt;x&lt;/i&gt; &amp; y"), "x & y");
  EXPECT_EQ(clean_ui_text("Line\none\ttab"), "Line one tab");
  EXPECT_EQ(clean_ui_text("\x1b[1mBold\x1b[0m"), "Bold");
  EXPECT_EQ(clean_ui_text("literal \\n escape"), "literal escape");
  EXPECT_EQ(clean_ui_text("  many   spaces  \n"), "many spaces");
  EXPECT_EQ(clean_ui_text("Fichier\u00a0:"), "Fichier\u00a0:");  // a lone no-break space stays
  EXPECT_EQ(clean_ui_text("a\u00a0 b"), "a b");
  EXPECT_EQ(clean_ui_text("soft\u00adhyphen"), "softhyphen");
}

TEST(TextClean, TrailingRule) {
  EXPECT_EQ(apply_trailing_rule("Save file?\n", "Salvare il file ?"), "Salvare il file?\n");
  EXPECT_EQ(apply_trailing_rule("Open…", "Apri..."), "Apri…");
  EXPECT_EQ(apply_trailing_rule("Open...", "Apri…"), "Apri...");
  EXPECT_EQ(apply_trailing_rule("Quit", "Esci."), "Esci");
  EXPECT_EQ(apply_trailing_rule("Done.", "Fatto"), "Fatto.");
  EXPECT_EQ(apply_trailing_rule("Delete (y/n)?", "Eliminare (s/n) ?"), "Eliminare (s/n)?");
  EXPECT_EQ(apply_trailing_rule("File", "Fichier\u00a0:"), "Fichier");
  EXPECT_EQ(apply_trailing_rule("What?", "¿Qué?"), "¿Qué?");
  EXPECT_EQ(apply_trailing_rule("He said \"no\".", "Ha detto \"no\""), "Ha detto \"no\".");  // quotes stay
  EXPECT_EQ(apply_trailing_rule("Name: ", "Nome"), "Nome: ");
  EXPECT_EQ(apply_trailing_rule("", "x!"), "x");
  EXPECT_EQ(trailing_run_size("Hi! \n"), 3u);
  EXPECT_EQ(trailing_run_size("Wait…"), 3u);  // bytes of U+2026
  EXPECT_EQ(trailing_run_size("(a)"), 0u);
  EXPECT_EQ(trailing_run_size(""), 0u);
}

TEST(TextClean, Counts) {
  const TextCounts a = count_text("Hello, wide world 42");
  EXPECT_EQ(a.chars, 20u);
  EXPECT_EQ(a.letters, 14u);
  EXPECT_EQ(a.words, 3u);
  const TextCounts b = count_text("Ünïcödé ok");
  EXPECT_EQ(b.chars, 10u);
  EXPECT_EQ(b.letters, 9u);
  EXPECT_EQ(b.words, 2u);
  EXPECT_EQ(trim_ascii("  \t x y \r\n"), "x y");
}

// ---------------------------------------------------------------------------------------------------------
// gettext builder

GettextOptions fixture_gettext_options(const std::string& locale_dir = kLocale) {
  GettextOptions o;
  o.locale_dir = locale_dir;
  o.langs = {"it", "es", "fr", "de"};
  return o;
}

TEST(BuildGettext, FixtureTree) {
  BuildReport r;
  std::vector<std::string> seen;
  const Corpus c = build_gettext(fixture_gettext_options(), &r, [&](std::string_view what, int64_t, int64_t) {
    seen.emplace_back(what);
  });
  EXPECT_EQ(c.meta.source, "gettext");
  EXPECT_EQ(c.meta.languages, (std::vector<std::string>{"it", "es", "fr", "de"}));
  // Catalogs: it/alpha, it/beta, de/alpha read; es/broken (truncated) and fr (no folder) skipped.
  EXPECT_EQ(r.inputs_read, 3);
  ASSERT_EQ(r.inputs_skipped.size(), 2u);
  const std::string skipped = r.inputs_skipped[0] + "\n" + r.inputs_skipped[1];
  EXPECT_NE(skipped.find("es/broken"), std::string::npos) << skipped;
  EXPECT_NE(skipped.find("fr: no folder"), std::string::npos) << skipped;
  EXPECT_EQ(seen.size(), 5u);  // 4 catalogs, then the end

  const std::set<PairTuple> want = {
      // alpha.it.po
      {"Open the file", "Apri il file", "it", "alpha"},
      {"Save the document", "Salva il documento", "it", "alpha"},
      {"file copied", "file copiato", "it", "alpha"},
      {"Cannot open:", "Impossibile aprire:", "it", "alpha"},
      {"Quit the program", "Esci dal programma", "it", "alpha"},
      {"Warning: the disk is full.", "Attenzione: il disco è pieno.", "it", "alpha"},
      {"Delete all selected files?", "Eliminare tutti i file selezionati?", "it", "alpha"},
      {"Print the version number and exit", "Stampa il numero di versione ed esci", "it", "alpha"},
      // beta.it.po
      {"Open the file", "Apri il documento", "it", "beta"},
      {"Open the file…", "Apri il documento…", "it", "beta"},
      {"Close the window", "Chiudi la finestra", "it", "beta"},
      // alpha.de.po (ISO-8859-1)
      {"Open the file", "Datei öffnen", "de", "alpha"},
      {"File menu entries", "Einträge im Menü Datei", "de", "alpha"},
      {"Print the version number and exit", "Versionsnummer ausgeben und beenden", "de", "alpha"},
  };
  EXPECT_EQ(pair_set(c), want);
  EXPECT_EQ(r.pairs_read, 10 + 9 + 3);
  EXPECT_EQ(r.pairs_kept, 14);
  EXPECT_EQ(r.kept_per_language.at("it"), 11);
  EXPECT_EQ(r.kept_per_language.at("de"), 3);
  EXPECT_EQ(dropped(r, drop_reason::kEmptyAfterCleaning), 1);  // "%s: %s"
  EXPECT_EQ(dropped(r, drop_reason::kTooFewWords), 1);         // "Version"
  EXPECT_EQ(dropped(r, drop_reason::kDuplicate), 2);           // beta's "Open the file", "Quit the program"
  EXPECT_EQ(dropped(r, drop_reason::kIdentical), 1);           // "Show hidden files"
  EXPECT_EQ(dropped(r, drop_reason::kTooShort), 1);            // "Go on"
  EXPECT_EQ(dropped(r, drop_reason::kLengthRatio), 1);         // "Copy the text to the clipboard"
  EXPECT_EQ(dropped(r, drop_reason::kTooFewLetters), 1);       // "1 2 3 4 5 6"
  EXPECT_EQ(r.dropped_total(), 8);
  EXPECT_NE(r.dropped.at(drop_reason::kIdentical).examples.at(0).find("it/beta"), std::string::npos);

  // One text_en row per English text, shared by languages and catalogs; one source row per catalog name.
  EXPECT_EQ(c.text_en.size(), 11u);
  EXPECT_EQ(c.text_xx.size(), 14u);
  EXPECT_EQ(c.sources.size(), 2u);
  size_t open_rows = 0;
  for (size_t i = 0; i < c.text_en.size(); ++i) open_rows += c.text_en.at(i) == "Open the file";
  EXPECT_EQ(open_rows, 1u);
  for (const auto img : c.pairs.image) EXPECT_EQ(img, -1);

  const std::string text = format_build_report(r);
  EXPECT_NE(text.find("kept 14"), std::string::npos) << text;
  EXPECT_NE(text.find("dropped duplicate: 2"), std::string::npos) << text;
}

TEST(BuildGettext, DeterministicWhateverTheDirectoryOrder) {
  const Corpus a = build_gettext(fixture_gettext_options(), nullptr);
  const Corpus b = build_gettext(fixture_gettext_options(), nullptr);
  expect_same_corpus(a, b);
  // The same catalogs created in the opposite order in another folder.
  TempDir tmp;
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(kLocale))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.rbegin(), files.rend());
  for (const auto& f : files) write_bytes(tmp / fs::relative(f, kLocale).string(), read_bytes(f.string()));
  const Corpus c = build_gettext(fixture_gettext_options(tmp.path.string()), nullptr);
  expect_same_corpus(a, c);
}

TEST(BuildGettext, CatalogFilterAndLanguages) {
  GettextOptions o = fixture_gettext_options();
  o.catalogs = {"beta", "nope"};
  o.langs = {"de", "it"};
  BuildReport r;
  const Corpus c = build_gettext(o, &r);
  EXPECT_EQ(c.meta.languages, (std::vector<std::string>{"de", "it"}));
  const std::set<PairTuple> want = {{"Open the file", "Apri il file", "it", "beta"},
                                    {"Open the file", "Apri il documento", "it", "beta"},
                                    {"Open the file…", "Apri il documento…", "it", "beta"},
                                    {"Close the window", "Chiudi la finestra", "it", "beta"},
                                    {"Quit the program", "Esci dal programma", "it", "beta"}};
  EXPECT_EQ(pair_set(c), want);  // without alpha, beta's first two are no longer duplicates
  EXPECT_EQ(r.inputs_read, 1);
  ASSERT_EQ(r.inputs_skipped.size(), 1u);
  EXPECT_NE(r.inputs_skipped[0].find("nope: no such catalog"), std::string::npos);
}

// Evaluation-only catalogs are never read: by default iso-codes' (iso_*) and KGeography's, whose names the
// multimodal suite evaluates on; a pattern is a name or a prefix ending in '*'.
TEST(BuildGettext, ExcludedCatalogsAreNeverRead) {
  EXPECT_EQ(GettextOptions{}.exclude, (std::vector<std::string>{"iso_*", "kgeography"}));
  GettextOptions o = fixture_gettext_options();
  o.langs = {"it"};
  o.exclude = {"al*"};
  BuildReport r;
  const Corpus c = build_gettext(o, &r);
  for (size_t i = 0; i < c.pairs.size(); ++i) EXPECT_EQ(c.sources.at(size_t(c.pairs.source[i])), "beta");
  EXPECT_EQ(r.inputs_read, 1);
  ASSERT_EQ(r.inputs_skipped.size(), 1u);
  EXPECT_NE(r.inputs_skipped[0].find("1 catalog(s) left out as evaluation-only (--exclude-catalogs): alpha"),
            std::string::npos) << r.inputs_skipped[0];
  const auto sources = [&] {
    std::set<std::string> s;
    const Corpus k = build_gettext(o, nullptr);
    for (size_t i = 0; i < k.sources.size(); ++i) s.insert(std::string(k.sources.at(i)));
    return s;
  };
  o.exclude = {"beta"};  // an exact name; "bet" alone does not match
  EXPECT_EQ(sources(), std::set<std::string>{"alpha"});
  o.exclude = {"bet"};
  EXPECT_EQ(sources(), (std::set<std::string>{"alpha", "beta"}));
}

TEST(BuildGettext, UnknownCharsetSkipsTheCatalog) {
  TempDir tmp;
  fs::copy(kLocale, tmp.path, fs::copy_options::recursive);
  const std::string de = tmp / "de/LC_MESSAGES/alpha.mo";
  std::string bytes = read_bytes(de);
  const size_t at = bytes.find("ISO-8859-1");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 10, "XX-UNKNOWN");
  write_bytes(de, bytes);
  BuildReport r;
  const Corpus c = build_gettext(fixture_gettext_options(tmp.path.string()), &r);
  EXPECT_EQ(r.pairs_kept, 11);
  EXPECT_EQ(r.kept_per_language.count("de"), 0u);
  bool named = false;
  for (const auto& s : r.inputs_skipped) named |= s.find("de/alpha") != std::string::npos && s.find("XX-UNKNOWN") != std::string::npos;
  EXPECT_TRUE(named) << format_build_report(r);
}

TEST(BuildGettext, UntranslatedAndBadEncoding) {
  TempDir tmp;
  write_bytes(tmp / "it/LC_MESSAGES/hand.mo",
              make_mo({{"", "Content-Type: text/plain; charset=UTF-8\n"},
                       {"An empty translation", ""},
                       {"Invalid bytes here", "Byte non validi \xff qui"},
                       {"Plural with an empty form\0Plurals with an empty form", std::string("\0Plurali", 8)},
                       {"A fine message", "Un messaggio corretto"}}));
  GettextOptions o;
  o.locale_dir = tmp.path.string();
  o.langs = {"it"};
  BuildReport r;
  const Corpus c = build_gettext(o, &r);
  EXPECT_EQ(r.pairs_read, 4);
  EXPECT_EQ(r.pairs_kept, 1);
  EXPECT_EQ(dropped(r, drop_reason::kUntranslated), 2);
  EXPECT_EQ(dropped(r, drop_reason::kBadEncoding), 1);
  EXPECT_EQ(pair_set(c), (std::set<PairTuple>{{"A fine message", "Un messaggio corretto", "it", "hand"}}));
}

TEST(BuildGettext, BadOptions) {
  GettextOptions o;
  o.locale_dir = kFix + "/no_such_folder";
  expect_error_containing([&] { build_gettext(o, nullptr); }, {"no_such_folder", "locale folder does not exist"});
  o.locale_dir = kLocale;
  o.langs.clear();
  expect_error_containing([&] { build_gettext(o, nullptr); }, {"no language"});
}

// The catalogs installed on this machine: a sane number of pairs, and nothing a program fills in at run
// time or styles left in any kept text.
TEST(BuildGettext, SystemCatalogs) {
  const std::string dir = "/usr/share/locale/it/LC_MESSAGES";
  size_t n_mo = 0;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir)) n_mo += e.path().extension() == ".mo";
  if (n_mo < 5) {
    std::printf("[  SKIPPED ] %s has %zu catalogs (5 or more wanted)\n", dir.c_str(), n_mo);
    GTEST_SKIP();
  }
  GettextOptions o;
  o.langs = {"it"};
  BuildReport r;
  const Corpus c = build_gettext(o, &r);
  std::printf("%s", format_build_report(r).c_str());
  EXPECT_GE(r.pairs_kept, int64_t(n_mo) * 5);
  EXPECT_LE(r.pairs_kept, r.pairs_read);
  EXPECT_EQ(c.pairs.size(), size_t(r.pairs_kept));
  const std::regex spec(R"(%(\d+\$)?[-+#0']*(\d+|\*)?(\.(\d+|\*))?(hh|ll|h|l|L|q|j|z|Z|t)?[diouxXeEfFgGaAcspn])");
  const std::regex tag(
      R"(</?(a|b|big|br|code|em|i|kbd|markup|p|s|small|span|strong|sub|sup|tt|u)( [^<>]*)?/?>)");
  const std::regex py(R"(%\([A-Za-z_]+\)[sdifr])");
  size_t bad = 0;
  auto check = [&](std::string_view t) {
    const std::string s(t);
    if (std::regex_search(s, spec) || std::regex_search(s, tag) || std::regex_search(s, py)) {
      if (++bad <= 100) ADD_FAILURE() << "kept text with a placeholder or tag: \"" << s << "\"";
    }
    EXPECT_EQ(s, std::string(trim_ascii(s)));
  };
  for (size_t i = 0; i < c.text_en.size(); ++i) check(c.text_en.at(i));
  for (size_t i = 0; i < c.text_xx.size(); ++i) check(c.text_xx.at(i));
  EXPECT_EQ(bad, 0u);
  // The trailing rule holds for every pair.
  for (size_t i = 0; i < c.pairs.size(); ++i) {
    const auto en = c.text_en.at(size_t(c.pairs.en[i])), xx = c.text_xx.at(size_t(c.pairs.xx[i]));
    ASSERT_EQ(en.substr(en.size() - trailing_run_size(en)), xx.substr(xx.size() - trailing_run_size(xx)))
        << en << " | " << xx;
  }
}

// ---------------------------------------------------------------------------------------------------------
// TSV builder

TEST(BuildTsv, LinesChecksAndTrailingRule) {
  TempDir tmp;
  const std::string path = tmp / "pairs.tsv";
  write_bytes(path,
              "Open the file\tApri il file\n"
              "Delete the selected files?\tEliminare i file selezionati\r\n"
              "no tab on this line\n"
              "two\ttabs\there\n"
              "\n"
              "bad \xff byte\tbyte \xfe sbagliato\n"
              "  Save the document.  \t Salva il documento!  \n"
              "Open the file\tApri il file.\n"
              "Empty translation\t   \n"
              "Same text\tSame text\n"
              "?\t!\n");
  TsvOptions o;
  o.inputs = {path};
  o.lang = "it";
  BuildReport r;
  const Corpus c = build_tsv(o, &r);
  EXPECT_EQ(c.meta.source, "tsv");
  EXPECT_EQ(c.meta.languages, std::vector<std::string>{"it"});
  const std::set<PairTuple> want = {{"Open the file", "Apri il file", "it", "pairs.tsv"},
                                    {"Delete the selected files?", "Eliminare i file selezionati?", "it", "pairs.tsv"},
                                    {"Save the document.", "Salva il documento.", "it", "pairs.tsv"},
                                    {"Same text", "Same text", "it", "pairs.tsv"}};
  EXPECT_EQ(pair_set(c), want);
  EXPECT_EQ(r.pairs_read, 10);  // the blank line is not a pair
  EXPECT_EQ(dropped(r, drop_reason::kBadTsvLine), 2);
  EXPECT_EQ(dropped(r, drop_reason::kBadEncoding), 1);
  EXPECT_EQ(dropped(r, drop_reason::kDuplicate), 1);  // "Apri il file." once the rule has run
  EXPECT_EQ(dropped(r, drop_reason::kUntranslated), 1);
  EXPECT_EQ(dropped(r, drop_reason::kEmptyAfterCleaning), 1);
  const auto& ex = r.dropped.at(drop_reason::kBadTsvLine).examples;
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_NE(ex[0].find(path + ":3"), std::string::npos) << ex[0];
  EXPECT_NE(ex[1].find(path + ":4"), std::string::npos) << ex[1];
  EXPECT_NE(r.dropped.at(drop_reason::kBadEncoding).examples[0].find(path + ":6"), std::string::npos);
}

TEST(BuildTsv, Errors) {
  TempDir tmp;
  TsvOptions o;
  o.lang = "it";
  expect_error_containing([&] { build_tsv(o, nullptr); }, {"no input file"});
  o.inputs = {tmp / "missing.tsv"};
  expect_error_containing([&] { build_tsv(o, nullptr); }, {"missing.tsv", "cannot open"});
  write_bytes(tmp / "empty.tsv", "");
  write_bytes(tmp / "blank.tsv", "\n  \n");
  for (const char* name : {"empty.tsv", "blank.tsv"}) {
    o.inputs = {tmp / name};
    expect_error_containing([&] { build_tsv(o, nullptr); }, {name, "empty file"});
  }
  o.inputs = {tmp / "blank.tsv"};
  o.lang.clear();
  expect_error_containing([&] { build_tsv(o, nullptr); }, {"no language"});
}

// ---------------------------------------------------------------------------------------------------------
// xMMEB builder

TEST(BuildXmmeb, FixtureJsonl) {
  XmmebOptions o;
  const std::string path = kFix + "/xmmeb/train.jsonl";
  o.inputs = {path};
  o.lang = "it";
  BuildReport r;
  const Corpus c = build_xmmeb(o, &r);
  EXPECT_EQ(c.meta.source, "xmmeb-jsonl");
  EXPECT_EQ(c.meta.languages, (std::vector<std::string>{"it", "es"}));
  EXPECT_EQ(r.pairs_read, 14);  // 15 lines, one blank
  EXPECT_EQ(r.pairs_kept, 6);
  const std::vector<std::pair<std::string, std::string>> want = {
      {"<|image_1|>\nRepresent the given image.\n", "<|image_1|>\nRappresenta l'immagine data.\n"},
      {"A dog running on the beach", "Un cane che corre sulla spiaggia"},
      {"<|image_1|>\nFind a caption for the image: ", "<|image_1|>\nTrova una didascalia per l'immagine: "},
      {"<|image_1|>\nWhich animal is this?", "<|image_1|>\nChe animale è questo?"},
      {"A red car", "Un coche rojo"},
      {"<|image_1|>\nIs it day or night?", "<|image_1|>\nÈ giorno o notte?"},
  };
  const std::vector<int64_t> want_image = {0, -1, 1, 0, -1, 1};
  const std::vector<uint8_t> want_lang = {0, 0, 0, 0, 1, 0};
  ASSERT_EQ(c.pairs.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(c.text_en.at(size_t(c.pairs.en[i])), want[i].first);
    EXPECT_EQ(c.text_xx.at(size_t(c.pairs.xx[i])), want[i].second);
    EXPECT_EQ(c.pairs.image[i], want_image[i]);
    EXPECT_EQ(c.pairs.lang[i], want_lang[i]);
    EXPECT_EQ(c.sources.at(size_t(c.pairs.source[i])), "train.jsonl");
  }
  // Two distinct images, each stored once with its bytes, name and decoded size.
  ASSERT_EQ(c.images.size(), 2u);
  EXPECT_EQ(r.images, 2);
  EXPECT_EQ(c.image_names.at(0), "images/a.png");
  EXPECT_EQ(c.image_names.at(1), "images/b.jpg");
  EXPECT_EQ(c.images.at(0), read_bytes(kFix + "/xmmeb/images/a.png"));
  EXPECT_EQ(c.images.at(1), read_bytes(kFix + "/xmmeb/images/b.jpg"));
  EXPECT_EQ(c.image_width, (std::vector<int32_t>{50, 75}));
  EXPECT_EQ(c.image_height, (std::vector<int32_t>{30, 53}));

  const std::vector<std::pair<const char*, int>> drops = {
      {drop_reason::kBadJson, 4},          {drop_reason::kImageMissing, 5},
      {drop_reason::kImageUnreadable, 6},  {drop_reason::kImagesDiffer, 7},
      {drop_reason::kPlaceholderLost, 8},  {drop_reason::kPlaceholderNoImage, 10},
      {drop_reason::kDuplicate, 12},       {drop_reason::kBadField, 14}};
  for (const auto& [reason, line] : drops) {
    SCOPED_TRACE(reason);
    ASSERT_EQ(dropped(r, reason), 1);
    EXPECT_NE(r.dropped.at(reason).examples.at(0).find(path + ":" + std::to_string(line)), std::string::npos)
        << r.dropped.at(reason).examples.at(0);
  }
  EXPECT_EQ(r.dropped_total(), 8);
  EXPECT_NE(r.dropped.at(drop_reason::kImageMissing).examples[0].find("missing.png"), std::string::npos);
  EXPECT_NE(r.dropped.at(drop_reason::kImageUnreadable).examples[0].find("corrupt.png"), std::string::npos);
}

TEST(BuildXmmeb, NoLanguageAndImageRoot) {
  TempDir tmp;
  const std::string path = tmp / "lines.jsonl";
  write_bytes(path,
              "{\"id\": 0, \"text_en\": \"A cat\", \"text_lang\": \"Un gatto\"}\n"
              "{\"id\": 1, \"text_en\": \"<|image_1|> A picture\", \"text_lang\": \"<|image_1|> Un'immagine\", "
              "\"img_en\": \"a.png\", \"img_lang\": \"a.png\", \"lang\": \"it\"}\n"
              "[1, 2]\n");
  XmmebOptions o;
  o.inputs = {path};
  o.image_root = kFix + "/xmmeb/images";
  BuildReport r;
  const Corpus c = build_xmmeb(o, &r);
  EXPECT_EQ(r.pairs_kept, 1);
  EXPECT_EQ(dropped(r, drop_reason::kNoLanguage), 1);
  EXPECT_EQ(dropped(r, drop_reason::kBadJson), 1);
  EXPECT_EQ(c.meta.languages, std::vector<std::string>{"it"});
  ASSERT_EQ(c.images.size(), 1u);
  EXPECT_EQ(c.image_width[0], 50);

  o.image_root = tmp / "no_such_root";
  expect_error_containing([&] { build_xmmeb(o, nullptr); }, {"no_such_root", "image root"});
  o.image_root.clear();
  o.inputs = {tmp / "nope.jsonl"};
  expect_error_containing([&] { build_xmmeb(o, nullptr); }, {"nope.jsonl", "cannot open"});
}

// ---------------------------------------------------------------------------------------------------------
// Through the file: what a builder made survives write_corpus / read_corpus.

void expect_round_trip(Corpus c, const std::string& path) {
  c.meta.created_by = "test";
  c.meta.created_at = "2000-01-01T00:00:00Z";
  write_corpus(path, c);
  const Corpus back = read_corpus(path);
  expect_same_corpus(c, back);
  EXPECT_EQ(back.meta.created_by, "test");
  EXPECT_EQ(back.meta.fingerprint, corpus_fingerprint(c));
  EXPECT_TRUE(validate_corpus(back, path).empty());
}

TEST(BuildCorpus, GettextWriteReadRoundTrip) {
  TempDir tmp;
  expect_round_trip(build_gettext(fixture_gettext_options(), nullptr), tmp / "gettext.h5");
}

TEST(BuildCorpus, XmmebWriteReadRoundTrip) {
  TempDir tmp;
  XmmebOptions o;
  o.inputs = {kFix + "/xmmeb/train.jsonl"};
  o.lang = "it";
  expect_round_trip(build_xmmeb(o, nullptr), tmp / "xmmeb.h5");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// DDTP builder (apt's Translation-<lang> indexes)

namespace {

const char* kDdtpEn =
    "Package: frobnicator\n"
    "Description-md5: aaaa\n"
    "Description-en: tool that frobnicates the files\n"
    " The frobnicator reads every file and frobnicates it\n"
    " in place, line by line.\n"
    " .\n"
    " This package holds the command line tool.\n"
    "\n"
    "Package: frobnicator-doc\n"
    "Description-md5: bbbb\n"
    "Description-en: documentation of the frobnicator\n"
    " This package holds the manual of the tool.\n"
    "\n"
    "Package: other\n"
    "Description-md5: cccc\n"
    "Description-en: another useful package\n"
    " It does one thing.\n"
    " .\n"
    " And another thing.\n";

const char* kDdtpIt =
    "Package: frobnicator\n"
    "Description-md5: aaaa\n"
    "Description-it: strumento che frobnica i file\n"
    " Il frobnicatore legge ogni file e lo frobnica\n"
    " sul posto, riga per riga.\n"
    " .\n"
    " Questo pacchetto contiene lo strumento a riga di comando.\n"
    "\n"
    "Package: other\n"
    "Description-md5: cccc\n"
    "Description-it: un altro pacchetto utile\n"
    " Fa una cosa sola e anche un'altra.\n"
    "\n"
    "Package: gone\n"
    "Description-md5: dddd\n"
    "Description-it: pacchetto senza originale inglese\n"
    "\n"
    "Package: broken\n"
    "Description-it: manca il campo md5 qui\n";

}  // namespace

TEST(BuildDdtp, AlignsByMd5AndParagraphs) {
  TempDir tmp;
  write_bytes(tmp / "Translation-en", kDdtpEn);
  write_bytes(tmp / "Translation-it", kDdtpIt);
  write_bytes(tmp / "Translation-de",
              "Package: frobnicator-doc\nDescription-md5: bbbb\nDescription-de: Dokumentation des Frobnikators\n"
              " Dieses Paket enthält das Handbuch des Werkzeugs.\n");
  DdtpOptions o;
  o.inputs = {tmp / "Translation-en", tmp / "Translation-it", tmp / "Translation-de"};
  BuildReport r;
  const Corpus c = build_ddtp(o, &r);
  using T = PairTuple;  // (English, translation, language, source)
  const std::set<T> want = {
      // the short descriptions
      {"tool that frobnicates the files", "strumento che frobnica i file", "it", "ddtp:frobnicator"},
      {"another useful package", "un altro pacchetto utile", "it", "ddtp:other"},
      {"documentation of the frobnicator", "Dokumentation des Frobnikators", "de", "ddtp:frobnicator-doc"},
      // the long ones paragraph by paragraph, lines joined with a space
      {"The frobnicator reads every file and frobnicates it in place, line by line.",
       "Il frobnicatore legge ogni file e lo frobnica sul posto, riga per riga.", "it", "ddtp:frobnicator"},
      {"This package holds the command line tool.", "Questo pacchetto contiene lo strumento a riga di comando.", "it",
       "ddtp:frobnicator"},
      {"This package holds the manual of the tool.", "Dieses Paket enthält das Handbuch des Werkzeugs.", "de",
       "ddtp:frobnicator-doc"}};
  EXPECT_EQ(pair_set(c), want);
  EXPECT_EQ(r.inputs_read, 3);
  EXPECT_EQ(r.pairs_kept, 6);
  // "other": 2 English paragraphs, 1 Italian: its long description gives no pair; "gone" has no English;
  // "broken" has no md5.
  EXPECT_EQ(r.dropped.at(drop_reason::kParagraphsDiffer).count, 1);
  EXPECT_EQ(r.dropped.at(drop_reason::kNoEnglish).count, 1);
  EXPECT_EQ(r.dropped.at(drop_reason::kBadField).count, 1);
  EXPECT_NE(r.dropped.at(drop_reason::kNoEnglish).examples[0].find("Translation-it:16"), std::string::npos)
      << r.dropped.at(drop_reason::kNoEnglish).examples[0];
  EXPECT_EQ(r.pairs_read, r.pairs_kept + r.dropped_total() - r.dropped.at(drop_reason::kBadField).count);

  // --langs picks the translations; the same inputs in another order give the same pairs.
  o.langs = {"de"};
  std::set<T> de;
  for (const auto& p : want)
    if (std::get<2>(p) == "de") de.insert(p);
  EXPECT_EQ(pair_set(build_ddtp(o, nullptr)), de);
  o.langs = {"it", "es", "fr", "de"};
  o.inputs = {tmp / "Translation-de", tmp / "Translation-it", tmp / "Translation-en"};
  EXPECT_EQ(pair_set(build_ddtp(o, nullptr)), want);
}

TEST(BuildDdtp, Errors) {
  TempDir tmp;
  DdtpOptions o;
  expect_error_containing([&] { build_ddtp(o, nullptr); }, {"no input file"});
  o.inputs = {tmp / "Translation-it"};
  expect_error_containing([&] { build_ddtp(o, nullptr); }, {"Translation-it", "cannot open"});
  write_bytes(tmp / "Translation-it", kDdtpIt);
  expect_error_containing([&] { build_ddtp(o, nullptr); }, {"no English descriptions", "Translation-en"});
  write_bytes(tmp / "notes.txt", "just some text\nwith no stanza fields\n");
  o.inputs = {tmp / "notes.txt"};
  expect_error_containing([&] { build_ddtp(o, nullptr); }, {"notes.txt", "no description", "Description-md5"});
}
