// build_tsv: pairs from "English<TAB>translation" lines. The texts are the user's: they are trimmed and given
// the trailing rule, not cleaned.
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "tokenizer/unicode.h"
#include "data/builders.h"
#include "data/pair_assembler.h"
#include "data/text_clean.h"

namespace xv {

namespace fs = std::filesystem;

Corpus build_tsv(const TsvOptions& opt, BuildReport* report, const BuildProgress& progress) {
  BuildReport local;
  BuildReport& r = report ? *report : local;
  r = BuildReport{};
  r.source = "tsv";
  XV_CHECK(!opt.inputs.empty(), "no input file: at least one TSV file expected");
  XV_CHECK(!opt.lang.empty(), "no language: the language code of the translations (it, es, ...) expected");
  Corpus c;
  c.meta.source = "tsv";
  PairAssembler out(&c, &r);
  const uint8_t lang = out.language(opt.lang);
  constexpr int64_t kProgressEvery = 100000;  // lines
  for (const auto& path : opt.inputs) {
    std::ifstream f(path, std::ios::binary);
    XV_CHECK(f.good(), "{}: cannot open the TSV file for reading", path);
    std::error_code ec;
    const auto total = int64_t(fs::file_size(path, ec));
    const std::string source = fs::path(path).filename().string();
    int64_t line_no = 0, lines_with_text = 0;
    std::string line;
    while (std::getline(f, line)) {
      ++line_no;
      if (progress && line_no % kProgressEvery == 0) progress(path, int64_t(f.tellg()), total);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (trim_ascii(line).empty()) continue;  // blank lines separate nothing and are not pairs
      ++lines_with_text;
      ++r.pairs_read;
      const std::string where = fmt::format("{}:{}", path, line_no);
      const size_t tab = line.find('\t');
      if (tab == std::string::npos || line.find('\t', tab + 1) != std::string::npos) {
        r.drop(drop_reason::kBadTsvLine, drop_example(where, line, ""));
        continue;
      }
      if (tok::utf8_invalid_at(line) != std::string::npos) {
        r.drop(drop_reason::kBadEncoding, drop_example(where, line.substr(0, tab), line.substr(tab + 1)));
        continue;
      }
      const std::string_view en = trim_ascii(std::string_view(line).substr(0, tab));
      const std::string_view xx_raw = trim_ascii(std::string_view(line).substr(tab + 1));
      if (xx_raw.empty()) {
        r.drop(drop_reason::kUntranslated, drop_example(where, en, xx_raw));
        continue;
      }
      if (trailing_run_size(en) == en.size() || trailing_run_size(xx_raw) == xx_raw.size()) {
        r.drop(drop_reason::kEmptyAfterCleaning, drop_example(where, en, xx_raw));
        continue;
      }
      out.add(en, apply_trailing_rule(en, xx_raw), lang, -1, source, opt.filter, where);
    }
    XV_CHECK(!f.bad(), "{}: read error after line {}", path, line_no);
    XV_CHECK(lines_with_text > 0, "{}: empty file: lines of \"English<TAB>translation\" expected", path);
    ++r.inputs_read;
    if (progress) progress(path, total, total);
  }
  return c;
}

}  // namespace xv
