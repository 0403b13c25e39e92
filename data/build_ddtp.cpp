// build_ddtp: pairs from the Debian package description translations (DDTP: apt's i18n/Translation-<lang>
// indexes, e.g. as scripts/install-ddtp.sh fetches them). Each index is RFC 822 stanzas
//   Package: 0ad
//   Description-md5: d943033bedada21853d2ae54a2578a7b
//   Description-it: gioco di strategia in tempo reale di guerra antica      <- the short description
//    0 A.D. (pronunciato "zero a d") è un gioco ...                          <- the long one, " ." between
//    .                                                                          paragraphs
// and a translation is aligned with the English description of the same Description-md5 (the md5 of the English
// text it translates). Pairs: the short descriptions, and the long descriptions paragraph by paragraph when both
// have as many paragraphs (otherwise the long description gives no pair). Lines of a paragraph are joined with a
// space; the source of a pair is "ddtp:<package>" (the first package of the md5 in the English index), so
// `corpus split --by source` holds out whole packages.
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include <fmt/ranges.h>

#include "core/error.h"
#include "data/builders.h"
#include "data/pair_assembler.h"
#include "data/text_clean.h"
#include "tokenizer/unicode.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

struct Description {
  std::string package, lang;
  std::string short_text;
  std::vector<std::string> paragraphs;
  int64_t line = 0;  // of its Description- field
};

// Appends a continuation line (its leading space removed) to the last paragraph; " ." starts a new one.
void add_line(Description& d, std::string_view body) {
  if (body == ".") {
    d.paragraphs.emplace_back();
    return;
  }
  body = trim_ascii(body);
  if (d.paragraphs.empty()) d.paragraphs.emplace_back();
  std::string& p = d.paragraphs.back();
  if (!body.empty()) p += (p.empty() ? "" : " ") + std::string(body);
}

// Every description of an index file, by Description-md5. A stanza without a Description-md5 or a
// Description-<lang> field is skipped (counted by the caller as a bad record).
std::vector<std::pair<std::string, Description>> read_index(const std::string& path, BuildReport& r,
                                                            const BuildProgress& progress) {
  std::ifstream f(path, std::ios::binary);
  XV_CHECK(f.good(), "{}: cannot open the DDTP index for reading", path);
  std::error_code ec;
  const auto total = int64_t(fs::file_size(path, ec));
  std::vector<std::pair<std::string, Description>> out;
  Description d;
  std::string md5, line;
  bool in_desc = false, any = false;
  int64_t line_no = 0, stanza_line = 0;
  auto finish = [&] {
    if (any) {
      if (md5.empty() || d.lang.empty())
        r.drop(drop_reason::kBadField,
               fmt::format("{}:{}: a stanza without Description-md5 or Description-<lang>", path, stanza_line));
      else {
        while (!d.paragraphs.empty() && d.paragraphs.back().empty()) d.paragraphs.pop_back();
        out.emplace_back(md5, std::move(d));
      }
    }
    d = Description{};
    md5.clear();
    in_desc = any = false;
  };
  while (std::getline(f, line)) {
    ++line_no;
    if (progress && line_no % 200000 == 0) progress(path, int64_t(f.tellg()), total);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim_ascii(line).empty()) {
      finish();
      continue;
    }
    if (!any) stanza_line = line_no;
    any = true;
    if (line[0] == ' ' || line[0] == '\t') {
      if (in_desc) add_line(d, std::string_view(line).substr(1));
      continue;
    }
    in_desc = false;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon);
    const std::string_view value = trim_ascii(std::string_view(line).substr(colon + 1));
    if (key == "Package") d.package = std::string(value);
    else if (key == "Description-md5") md5 = std::string(value);
    else if (key.rfind("Description-", 0) == 0) {
      d.lang = key.substr(12);
      d.short_text = std::string(value);
      d.line = line_no;
      in_desc = true;
    }
  }
  finish();
  XV_CHECK(!f.bad(), "{}: read error after line {}", path, line_no);
  XV_CHECK(!out.empty(), "{}: no description: an apt Translation-<lang> index (Package, Description-md5, "
                         "Description-<lang> stanzas) expected", path);
  if (progress) progress(path, total, total);
  return out;
}

}  // namespace

Corpus build_ddtp(const DdtpOptions& opt, BuildReport* report, const BuildProgress& progress) {
  BuildReport local;
  BuildReport& r = report ? *report : local;
  r = BuildReport{};
  r.source = "ddtp";
  XV_CHECK(!opt.inputs.empty(), "no input file: the Translation-en index and at least one translated index expected");
  // Every input, read; the English ones give the descriptions the others translate.
  std::vector<std::pair<std::string, std::vector<std::pair<std::string, Description>>>> indexes;
  std::unordered_map<std::string, const Description*> english;  // md5 -> the first English description
  for (const auto& path : opt.inputs) {
    indexes.emplace_back(path, read_index(path, r, progress));
    ++r.inputs_read;
  }
  for (const auto& [path, descs] : indexes)
    for (const auto& [md5, d] : descs)
      if (d.lang == "en") english.emplace(md5, &d);
  XV_CHECK(!english.empty(),
           "no English descriptions: one of the inputs must be the Translation-en index (Description-en fields); "
           "the inputs were {}",
           fmt::format("{}", fmt::join(opt.inputs, ", ")));
  Corpus c;
  c.meta.source = "ddtp";
  PairAssembler out(&c, &r);
  for (const auto& [path, descs] : indexes)
    for (const auto& [md5, d] : descs) {
      if (d.lang == "en") continue;
      if (!opt.langs.empty() && std::find(opt.langs.begin(), opt.langs.end(), d.lang) == opt.langs.end()) continue;
      const std::string where = fmt::format("{}:{}", path, d.line);
      const auto it = english.find(md5);
      ++r.pairs_read;
      if (it == english.end()) {
        r.drop(drop_reason::kNoEnglish, drop_example(where, "", d.short_text));
        continue;
      }
      const Description& en = *it->second;
      const uint8_t lang = out.language(d.lang);
      const std::string source = "ddtp:" + en.package;
      std::vector<std::pair<std::string_view, std::string_view>> pairs = {{en.short_text, d.short_text}};
      if (en.paragraphs.size() == d.paragraphs.size())
        for (size_t p = 0; p < en.paragraphs.size(); ++p) pairs.emplace_back(en.paragraphs[p], d.paragraphs[p]);
      else {
        ++r.pairs_read;
        r.drop(drop_reason::kParagraphsDiffer, drop_example(where, std::to_string(en.paragraphs.size()) + " paragraphs",
                                                            std::to_string(d.paragraphs.size()) + " paragraphs"));
      }
      for (size_t p = 0; p < pairs.size(); ++p) {
        if (p > 0) ++r.pairs_read;
        const auto [e, x] = pairs[p];
        if (tok::utf8_invalid_at(e) != std::string::npos || tok::utf8_invalid_at(x) != std::string::npos) {
          r.drop(drop_reason::kBadEncoding, drop_example(where, e, x));
          continue;
        }
        if (x.empty()) {
          r.drop(drop_reason::kUntranslated, drop_example(where, e, x));
          continue;
        }
        out.add(e, x, lang, -1, source, opt.filter, where);
      }
    }
  return c;
}

}  // namespace xv
