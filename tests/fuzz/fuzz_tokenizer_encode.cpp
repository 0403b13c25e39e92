// libFuzzer target for encoding untrusted text (tokenizer/tokenizer.h) with two real tokenizers of the
// fixtures: the tiny BERT's (WordPiece, BertNormalizer) and the tiny Phi-3-vision's (BPE with byte fallback,
// added tokens). The input is the text, any bytes: valid UTF-8 must encode, invalid UTF-8 must end in an
// xv::Error, and then its longest valid prefix is encoded, so that every input reaches the tokenizers. The ids
// are decoded back.
// The input read as 16-bit ids is decoded as well: byte-fallback tokens can put any byte sequence together.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void encode_and_decode(const xv::Tokenizer& tok, std::string_view text) {
  for (bool special : {true, false}) {
    const std::vector<int32_t> ids = tok.encode(text, special);
    (void)tok.decode(ids, true);
    (void)tok.decode(ids, false);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<xv::Tokenizer> tokenizers[] = {
      xv::Tokenizer::from_file(std::string(XV_FIXTURES) + "/models/tiny_bert/tokenizer.json"),
      xv::Tokenizer::from_file(std::string(XV_FIXTURES) + "/models/tiny_phi3v/tokenizer.json")};
  const std::string_view text = xv_fuzz::as_text(data, size);
  const size_t bad = xv::tok::utf8_invalid_at(text);
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < size; i += 2) ids.push_back(int32_t(data[i] | (data[i + 1] << 8)));
  for (const auto& tok : tokenizers) {
    // Valid text must encode; invalid text must be refused with an xv::Error (anything else escapes).
    if (bad == std::string_view::npos) {
      encode_and_decode(*tok, text);
    } else {
      bool refused = false;
      try {
        (void)tok->encode(text);
      } catch (const xv::Error&) {
        refused = true;
      }
      if (!refused) {
        std::fprintf(stderr, "encode accepted invalid UTF-8 (byte %zu)\n", bad);
        std::abort();
      }
      encode_and_decode(*tok, text.substr(0, bad));
    }
    (void)tok->decode(ids, true);
    (void)tok->decode(ids, false);
  }
  return 0;
}
