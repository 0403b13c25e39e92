// Hugging Face tokenizer.json tokenizers: encode and decode with ids identical to the `tokenizers` library.
//
// Supported (everything else is refused at load time with an xv::Error naming the file and the field):
//   model          BPE (merges as "a b" strings or ["a", "b"] lists, byte_fallback, fuse_unk, unk_token,
//                  continuing_subword_prefix, end_of_word_suffix, ignore_merges; dropout must be null or 0),
//                  WordPiece (continuing_subword_prefix, max_input_chars_per_word, unk_token)
//   normalizer     null, Sequence, Prepend, Replace (String pattern), NFC, NFD, NFKC, NFKD, Lowercase,
//                  BertNormalizer
//   pre_tokenizer  null, Sequence, Metaspace (prepend_scheme first/always/never, split), BertPreTokenizer,
//                  WhitespaceSplit
//   post_processor null, TemplateProcessing (single), BertProcessing, RobertaProcessing
//   decoder        null, Sequence, Replace (String pattern), ByteFallback, Fuse, Strip, Metaspace, WordPiece
//   added_tokens   with their special / normalized / lstrip / rstrip / single_word flags; ids are assigned the
//                  way the library assigns them (the "id" stored in the file is not trusted, as in the library);
//                  as in tokenizers 0.23, a `normalized` added token decodes to its normalized form, and so is
//                  only skipped by skip_special_tokens when normalizing leaves it unchanged
// Known approximation: Metaspace's prepend_scheme "first" asks whether a piece starts the original text; that
// is tracked exactly for pieces cut by non-normalized added tokens, and approximated (normalized offset 0) for
// pieces cut by `normalized` added tokens inside text a normalizer changed.
// encode() never truncates nor pads: the `truncation` and `padding` blocks of the file are only reported
// (truncation_max_length, padding_id) for the callers, which cut and pad with their own limits.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace xv {

class Tokenizer {
 public:
  // Loads a tokenizer.json; throws xv::Error naming the file, the field and what was expected.
  static std::unique_ptr<Tokenizer> from_file(const std::string& path);
  // The same from the JSON text; `name` stands for the file in error messages.
  static std::unique_ptr<Tokenizer> from_json(std::string_view json_text, const std::string& name);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Throws xv::Error when `text` is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Ids the tokenizer does not know are skipped, as the library does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = true) const;

  int32_t token_to_id(std::string_view tok) const;  // -1 when absent
  std::string id_to_token(int32_t id) const;        // "" when absent
  bool is_special(int32_t id) const;                // what decode(skip_special_tokens) drops
  int64_t vocab_size() const;                       // model vocab plus added tokens (distinct contents)
  std::string fingerprint() const;                  // FNV-1a 64 of the file bytes, 16 hex digits
  int64_t truncation_max_length() const;            // truncation.max_length in the file, 0 when absent
  int32_t padding_id() const;                       // padding.pad_id in the file, -1 when absent

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace xv
