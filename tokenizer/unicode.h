// UTF-8 and Unicode helpers for the tokenizer, matching what the Rust `tokenizers` library uses:
// Rust's char::is_whitespace (the White_Space property), Unicode general categories (from utf8proc),
// regex \w, char::to_lowercase, and the NFC/NFD/NFKC/NFKD normal forms (from utf8proc).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace xv::tok {

// Byte offset of the first byte that does not start a valid UTF-8 sequence (overlong forms, surrogates
// and code points past U+10FFFF are invalid, as in Rust's str), or npos when `s` is valid.
size_t utf8_invalid_at(std::string_view s);
// Decodes the code point starting at s[i] of a valid UTF-8 string; returns its length in bytes.
int utf8_decode(std::string_view s, size_t i, char32_t* cp);
void utf8_append(std::string& out, char32_t cp);
std::u32string utf8_to_u32(std::string_view s);
std::string u32_to_utf8(std::u32string_view s);

bool is_white_space(char32_t c);      // White_Space property (Rust char::is_whitespace, regex \s)
bool is_punctuation(char32_t c);      // general category P* (Pc Pd Ps Pe Pi Pf Po)
bool is_other_class(char32_t c);      // Cc Cf Co Cs: what BertNormalizer's clean_text removes
bool is_mark_nonspacing(char32_t c);  // Mn
bool is_word_char(char32_t c);        // regex \w: letters, marks, Nd, Pc, Nl, ZWNJ/ZWJ, circled letters
// Appends the full lowercase mapping of `c` (Rust char::to_lowercase: U+0130 gives two characters).
void append_lowercase(std::u32string& out, char32_t c);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
std::string unicode_normalize(std::string_view s, NormalForm form);

}  // namespace xv::tok
