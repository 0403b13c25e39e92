// tokenizer.json normalizers: Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD, Lowercase, BertNormalizer.
// A normalizer rewrites one piece of text (valid UTF-8) in place; the pieces are what is left between added
// tokens, so Prepend, for one, applies once per piece (as in the library).
#pragma once
#include <memory>
#include <string>

#include "tokenizer/json.h"

namespace xv::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
};

// `j` is the "normalizer" value at `at`; null gives nullptr (no normalization).
std::unique_ptr<Normalizer> make_normalizer(const json& j, const JsonAt& at);

// Replaces every non-overlapping occurrence of `pattern` (non-empty), left to right.
std::string replace_all(std::string_view s, std::string_view pattern, std::string_view content);

}  // namespace xv::tok
