// libFuzzer target for gettext .mo catalogs (data/mo_catalog.h): the input is given to parse_mo_catalog, and
// a catalog that parses goes on as `corpus build --from gettext` takes it (data/build_gettext.cpp): a
// CharsetConverter for the charset its header names, every msgid and msgstr converted to UTF-8, and the
// converted pair cleaned (data/text_clean.h).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/error.h"
#include "data/mo_catalog.h"
#include "data/text_clean.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const xv::MoCatalog cat = xv::parse_mo_catalog(xv_fuzz::as_text(data, size), "fuzz.mo");
    (void)xv::header_charset(cat.header);
    xv::CharsetConverter conv(cat.charset);
    std::string en, xx;
    for (const xv::MoEntry& e : cat.entries) {
      for (const std::string& s : e.msgstr) (void)conv.to_utf8(s, &xx);
      if (!conv.to_utf8(e.msgid, &en) || e.msgstr.empty() || !conv.to_utf8(e.msgstr[0], &xx)) continue;
      const std::string en_c = xv::clean_ui_text(en), xx_c = xv::clean_ui_text(xx);
      (void)xv::apply_trailing_rule(en_c, xx_c);
      (void)xv::trailing_run_size(en_c);
    }
  } catch (const xv::Error&) {
    // Bad input, reported as the format says it must be.
  }
  return 0;
}
