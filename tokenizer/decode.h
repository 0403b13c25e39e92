// tokenizer.json decoders: Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace, WordPiece. Each rewrites
// the list of token strings (decode_chain in the library); the tokenizer joins the result with "".
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/json.h"

namespace xv::tok {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// `j` is the "decoder" value at `at`; null gives nullptr (tokens joined with " ").
std::unique_ptr<Decoder> make_decoder(const json& j, const JsonAt& at);

}  // namespace xv::tok
