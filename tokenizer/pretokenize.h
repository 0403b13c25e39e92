// tokenizer.json pre-tokenizers: Metaspace, BertPreTokenizer, WhitespaceSplit, Sequence. A pre-tokenizer
// cuts one normalized piece into the words the model sees; empty words are dropped, as in the library.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/json.h"

namespace xv::tok {

struct Word {
  std::string text;
  // The word starts the original text (offset 0): Metaspace's prepend_scheme "first" only prepends there.
  bool at_origin = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void split(const Word& piece, std::vector<Word>& out) const = 0;
};

// `j` is the "pre_tokenizer" value at `at`; null gives nullptr (the whole piece is one word).
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const JsonAt& at);

enum class PrependScheme { First, Always, Never };
// Metaspace's "prepend_scheme" with the older "add_prefix_space" (false means never) as the library reads it.
PrependScheme parse_prepend_scheme(const json& j, const JsonAt& at);

}  // namespace xv::tok
