// BuildReport: the counts of a corpus build, and their text form.
#include <fmt/format.h>

#include "data/builders.h"

namespace xv {

void BuildReport::drop(const std::string& reason, const std::string& example) {
  DropStats& d = dropped[reason];
  ++d.count;
  if (d.examples.size() < kMaxExamples) d.examples.push_back(example);
}

int64_t BuildReport::dropped_total() const {
  int64_t n = 0;
  for (const auto& [reason, d] : dropped) n += d.count;
  return n;
}

std::string format_build_report(const BuildReport& r) {
  std::string out = fmt::format("corpus build ({}): {} input(s) read, {} skipped\n", r.source, r.inputs_read,
                                r.inputs_skipped.size());
  for (const auto& s : r.inputs_skipped) out += fmt::format("  skipped {}\n", s);
  out += fmt::format("  pairs read {}, kept {}, dropped {}\n", r.pairs_read, r.pairs_kept, r.dropped_total());
  for (const auto& [lang, n] : r.kept_per_language) out += fmt::format("  kept {}: {}\n", lang, n);
  if (r.images > 0) out += fmt::format("  images stored {}\n", r.images);
  for (const auto& [reason, d] : r.dropped) {
    out += fmt::format("  dropped {}: {}\n", reason, d.count);
    for (const auto& e : d.examples) out += fmt::format("      e.g. {}\n", e);
  }
  return out;
}

}  // namespace xv
