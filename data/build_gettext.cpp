// build_gettext: en->xx pairs from the GNU gettext catalogs installed under a locale folder.
#include <algorithm>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/file_util.h"
#include "data/builders.h"
#include "data/mo_catalog.h"
#include "data/pair_assembler.h"
#include "data/text_clean.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

// The .mo files of one language folder, sorted by name: the build must not depend on directory order.
std::vector<fs::path> list_catalogs(const fs::path& dir, const std::set<std::string>& wanted) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.extension() != ".mo" || !it->is_regular_file(ec)) continue;
    if (!wanted.empty() && wanted.count(p.stem().string()) == 0) continue;
    out.push_back(p);
  }
  XV_CHECK(!ec, "{}: cannot list the folder: {}", dir.string(), ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

bool excluded(const std::string& name, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (!p.empty() && p.back() == '*' ? name.rfind(p.substr(0, p.size() - 1), 0) == 0 : name == p) return true;
  }
  return false;
}

}  // namespace

Corpus build_gettext(const GettextOptions& opt, BuildReport* report, const BuildProgress& progress) {
  BuildReport local;
  BuildReport& r = report ? *report : local;
  r = BuildReport{};
  r.source = "gettext";
  require_dir(opt.locale_dir, "locale folder");
  XV_CHECK(!opt.langs.empty(), "no language given: at least one language code (it, es, ...) expected");
  Corpus c;
  c.meta.source = "gettext";
  PairAssembler out(&c, &r);
  for (const auto& lang : opt.langs) out.language(lang);  // meta.languages in the order given

  // Every catalog of every language first, to report progress against a total.
  const std::set<std::string> wanted(opt.catalogs.begin(), opt.catalogs.end());
  std::vector<std::pair<std::string, fs::path>> catalogs;  // (lang, file)
  std::set<std::string> found, left_out;
  for (const auto& lang : opt.langs) {
    const fs::path dir = fs::path(opt.locale_dir) / lang / "LC_MESSAGES";
    if (!fs::is_directory(dir)) {
      r.inputs_skipped.push_back(fmt::format("{}: no folder {}", lang, dir.string()));
      continue;
    }
    for (auto& p : list_catalogs(dir, wanted)) {
      found.insert(p.stem().string());
      if (excluded(p.stem().string(), opt.exclude)) {
        left_out.insert(p.stem().string());
        continue;
      }
      catalogs.emplace_back(lang, std::move(p));
    }
  }
  if (!left_out.empty()) {
    std::string names;
    for (const auto& n : left_out) names += (names.empty() ? "" : ", ") + n;
    r.inputs_skipped.push_back(fmt::format("{} catalog(s) left out as evaluation-only (--exclude-catalogs): {}",
                                           left_out.size(), names));
  }
  for (const auto& name : wanted)
    if (found.count(name) == 0) r.inputs_skipped.push_back(fmt::format("{}: no such catalog in any language", name));

  for (size_t k = 0; k < catalogs.size(); ++k) {
    const auto& [lang, path] = catalogs[k];
    const std::string name = path.stem().string();
    const std::string where = lang + "/" + name;
    if (progress) progress(where, int64_t(k), int64_t(catalogs.size()));
    MoCatalog cat;
    try {
      cat = read_mo_catalog(path.string());
    } catch (const Error& e) {
      r.inputs_skipped.push_back(fmt::format("{}: {}", where, e.what()));
      continue;
    }
    std::unique_ptr<CharsetConverter> conv;
    try {
      conv = std::make_unique<CharsetConverter>(cat.charset);
    } catch (const Error& e) {
      r.inputs_skipped.push_back(fmt::format("{}: {}", where, e.what()));
      continue;
    }
    ++r.inputs_read;
    const uint8_t lang_row = out.language(lang);
    std::string en, xx;
    for (const MoEntry& e : cat.entries) {
      ++r.pairs_read;
      // A plural entry keeps its singular: msgid with msgstr[0].
      static const std::string kNone;
      const std::string& raw_xx = e.msgstr.empty() ? kNone : e.msgstr[0];
      if (!conv->to_utf8(e.msgid, &en) || !conv->to_utf8(raw_xx, &xx)) {
        r.drop(drop_reason::kBadEncoding, drop_example(where, e.msgid, raw_xx));
        continue;
      }
      if (xx.empty()) {
        r.drop(drop_reason::kUntranslated, drop_example(where, en, xx));
        continue;
      }
      const std::string en_c = clean_ui_text(en);
      const std::string xx_c = clean_ui_text(xx);
      const std::string xx_t = apply_trailing_rule(en_c, xx_c);
      // Empty once the trailing run is set aside: "%s: %s" leaves ":" at most.
      if (trailing_run_size(en_c) == en_c.size() || trailing_run_size(xx_c) == xx_c.size()) {
        r.drop(drop_reason::kEmptyAfterCleaning, drop_example(where, en, xx));
        continue;
      }
      out.add(en_c, xx_t, lang_row, -1, name, opt.filter, where);
    }
  }
  if (progress) progress("", int64_t(catalogs.size()), int64_t(catalogs.size()));
  return c;
}

}  // namespace xv
