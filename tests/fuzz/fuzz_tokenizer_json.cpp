// libFuzzer target for tokenizer.json loading (tokenizer/tokenizer.h): the input is the JSON text given to
// Tokenizer::from_json. A tokenizer that loads then encodes a few fixed texts (with and without special
// tokens, so the normalizer, pre-tokenizer, model and post-processor it declares all run) and decodes the ids
// and a run of ids across its vocabulary, which exercises the decoder it declares. A tokenizer that loads must
// decode any ids without an error (an escaping xv::Error is a finding there); encoding may refuse a text.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Plain words, accents (NFD/NFKC, strip_accents), CJK (handle_chinese_chars), spaces and controls
  // (clean_text, Metaspace), the special tokens of both fixture tokenizers, and bytes only byte_fallback knows.
  static const std::vector<std::string> texts = {
      "Hello, world! Don't stop.",
      "  Caf\xc3\xa9 na\xc3\xafve \xef\xac\x81" "ne \xe2\x84\xab  ",
      "\xe4\xb8\xad\xe6\x96\x87 text\tand\x0b" "control\r\n",
      "[CLS] [UNK]x [MASK]<s></s><unk> <|image_1|> <|endoftext|>",
      "\xf0\x9f\x98\x80\xe2\x80\x8d\xcc\x81 \xe2\x96\x81\xe2\x96\x81",
      ""};
  std::unique_ptr<xv::Tokenizer> tok;
  try {
    tok = xv::Tokenizer::from_json(xv_fuzz::as_text(data, size), "fuzz tokenizer.json");
  } catch (const xv::Error&) {
    return 0;  // bad input, reported as the format says it must be
  }
  for (const std::string& text : texts) {
    for (bool special : {true, false}) {
      std::vector<int32_t> ids;
      try {
        ids = tok->encode(text, special);
      } catch (const xv::Error&) {
        continue;  // an unk_token missing from the vocab is reported when a text needs it, as the library does
      }
      (void)tok->decode(ids, true);
      (void)tok->decode(ids, false);
    }
  }
  // The first 300 ids (a small vocab's tokens, byte tokens) and ids the tokenizer does not know.
  std::vector<int32_t> ids = {-1, int32_t(tok->vocab_size()), 2147483647};
  for (int32_t id = 0; id < 300; ++id) ids.push_back(id);
  (void)tok->decode(ids, true);
  (void)tok->decode(ids, false);
  for (int32_t id : ids) {
    (void)tok->is_special(id);
    (void)tok->token_to_id(tok->id_to_token(id));
  }
  return 0;
}
