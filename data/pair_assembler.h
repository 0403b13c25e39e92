// What the three builders share once a pair's final texts are known: the filters, deduplication, and the
// Corpus rows (one text_en row per distinct English text and one text_xx row per distinct translation,
// whatever the language; one source row per source name).
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "data/builders.h"

namespace xv {

class PairAssembler {
 public:
  PairAssembler(Corpus* corpus, BuildReport* report) : c_(corpus), r_(report) {}

  int32_t source(const std::string& name);
  uint8_t language(const std::string& lang);

  // Filters (TextFilter, in the order of docs/corpus-build.md) and deduplicates on (English, translation,
  // language, image); adds the pair when it passes. A drop is counted in the report with `where` in its
  // example. Texts must be valid UTF-8. Returns whether the pair was kept.
  // The source row is made with the source's first kept pair: no source without pairs.
  bool add(std::string_view en, std::string_view xx, uint8_t lang, int64_t image, const std::string& source,
           const TextFilter& filter, const std::string& where);

 private:
  Corpus* c_;
  BuildReport* r_;
  std::unordered_map<std::string, int64_t> en_rows_, xx_rows_;
  std::map<std::string, int32_t> source_rows_;
  std::set<std::tuple<int64_t, int64_t, uint8_t, int64_t>> seen_;
};

// "where: \"en\" | \"xx\"", each text shortened and with control characters escaped: a report example.
std::string drop_example(const std::string& where, std::string_view en, std::string_view xx);

}  // namespace xv
