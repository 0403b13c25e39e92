// Splitting a corpus into training and held-out parts by a key, so that evaluation never sees a training
// source (`xvlm2vec corpus split`), and the summary `corpus inspect` prints.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/corpus.h"

namespace xv {

struct SplitOptions {
  std::string by = "source";          // source: whole sources (gettext catalogs) | pair: single pairs
  double heldout_fraction = 0.2;      // of the pairs, reached by whole keys (at least one key)
  std::vector<std::string> heldout;   // explicit keys to hold out (source names); overrides the fraction
  uint64_t seed = 0;                  // the order keys are drawn in
  bool drop_shared_english = true;    // drop from the held-out part pairs whose English text is in the training
                                      // part (the same string in two catalogs), so no query was trained on
};

struct SplitResult {
  Corpus train, heldout;
  std::vector<std::string> heldout_keys;
  int64_t dropped_shared = 0;  // held-out pairs dropped by drop_shared_english
};

// The parts keep the rows they use (texts, images, sources, tokens; renumbered) and the metadata; a teacher
// block is not carried (its fingerprint would not match the part). `parent` names the input in meta.source.
SplitResult split_corpus(const Corpus& c, const SplitOptions& o, const std::string& parent);

// A subset of the pairs, in the given order, as a corpus of its own (rows renumbered, teacher dropped).
Corpus corpus_subset(const Corpus& c, const std::vector<int64_t>& pairs);

// Counts per language and source, length histograms, images, tokens, teacher, and `samples` example pairs.
std::string inspect_corpus(const Corpus& c, const std::string& path, int64_t samples, uint64_t seed);

}  // namespace xv
