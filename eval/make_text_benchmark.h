// A text-retrieval benchmark from a held-out parallel corpus: for each language xx, the task xx->en (the
// translation retrieves its English text among English distractors) and en->xx (English retrieves the
// translation among translations in xx), on the same query pairs; plus held-out English texts for the
// English-preservation score. Every random choice is a pure function of the seed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "eval/benchmark.h"

namespace xv {

struct TextBenchmarkOptions {
  int64_t candidates = 1000;  // per query, the gold included: the pool of pairs every query ranks
  int64_t queries = 500;      // per language (the same pairs serve both directions)
  int64_t english = 1000;     // held-out English texts; 0: none
  uint64_t seed = 0;
  std::vector<std::string> langs = {"it", "es", "fr", "de"};
  std::string name = "text-retrieval";
  std::string source;      // recorded in the manifest
  std::string created_by;  // recorded in the manifest
};

// Builds the benchmark from `c` (its texts and languages; images are not used). `where` names the corpus in
// messages. Errors: a language missing from the corpus, fewer usable pairs than `queries`, fewer distinct
// texts than `candidates` on either side of a language, fewer distinct English texts than `english`.
Benchmark make_text_benchmark(const Corpus& c, const TextBenchmarkOptions& opt, const std::string& where);

}  // namespace xv
