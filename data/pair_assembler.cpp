#include "data/pair_assembler.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode.h"
#include "data/text_clean.h"

namespace xv {

namespace {

// A text for a one-line report example: at most `max_chars` code points, control characters escaped.
std::string example_text(std::string_view s, size_t max_chars = 60) {
  std::string out;
  size_t chars = 0;
  for (size_t i = 0; i < s.size();) {
    if (chars == max_chars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 1;
    if (c >= 0x80) {
      // Invalid bytes are shown as \xNN so that an example of bad encoding still prints.
      const size_t bad = tok::utf8_invalid_at(s.substr(i, 4));
      if (bad == 0) {
        out += fmt::format("\\x{:02x}", c);
        ++i;
        ++chars;
        continue;
      }
      char32_t cp;
      len = size_t(tok::utf8_decode(s, i, &cp));
      out.append(s.substr(i, len));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else if (c == '"') {
      out += "\\\"";
    } else {
      out += char(c);
    }
    i += len;
    ++chars;
  }
  return out;
}

}  // namespace

std::string drop_example(const std::string& where, std::string_view en, std::string_view xx) {
  return fmt::format("{}: \"{}\" | \"{}\"", where, example_text(en), example_text(xx));
}

int32_t PairAssembler::source(const std::string& name) {
  const auto it = source_rows_.find(name);
  if (it != source_rows_.end()) return it->second;
  const auto row = int32_t(c_->sources.push(name));
  source_rows_.emplace(name, row);
  return row;
}

uint8_t PairAssembler::language(const std::string& lang) {
  auto& langs = c_->meta.languages;
  const auto it = std::find(langs.begin(), langs.end(), lang);
  if (it != langs.end()) return uint8_t(it - langs.begin());
  XV_CHECK(langs.size() < 255, "more than 255 languages: the corpus stores the language as one byte");
  langs.push_back(lang);
  return uint8_t(langs.size() - 1);
}

bool PairAssembler::add(std::string_view en, std::string_view xx, uint8_t lang, int64_t image, const std::string& source,
                        const TextFilter& f, const std::string& where) {
  auto drop = [&](const char* reason) {
    r_->drop(reason, drop_example(where, en, xx));
    return false;
  };
  if (f.drop_identical && en == xx) return drop(drop_reason::kIdentical);
  const TextCounts ce = count_text(en), cx = count_text(xx);
  if (int64_t(std::min(ce.chars, cx.chars)) < f.min_chars) return drop(drop_reason::kTooShort);
  if (f.max_chars > 0 && int64_t(std::max(ce.chars, cx.chars)) > f.max_chars) return drop(drop_reason::kTooLong);
  if (int64_t(std::min(ce.letters, cx.letters)) < f.min_letters) return drop(drop_reason::kTooFewLetters);
  if (int64_t(ce.words) < f.min_words) return drop(drop_reason::kTooFewWords);
  if (f.max_length_ratio > 0) {
    const double lo = double(std::max<size_t>(1, std::min(ce.chars, cx.chars)));
    const double hi = double(std::max(ce.chars, cx.chars));
    if (hi / lo > f.max_length_ratio) return drop(drop_reason::kLengthRatio);
  }
  const std::string en_s(en), xx_s(xx);
  const auto en_it = en_rows_.find(en_s);
  const auto xx_it = xx_rows_.find(xx_s);
  if (en_it != en_rows_.end() && xx_it != xx_rows_.end() &&
      seen_.count({en_it->second, xx_it->second, lang, image}) > 0)
    return drop(drop_reason::kDuplicate);
  const int64_t en_row = en_it != en_rows_.end() ? en_it->second : int64_t(c_->text_en.push(en));
  const int64_t xx_row = xx_it != xx_rows_.end() ? xx_it->second : int64_t(c_->text_xx.push(xx));
  if (en_it == en_rows_.end()) en_rows_.emplace(en_s, en_row);
  if (xx_it == xx_rows_.end()) xx_rows_.emplace(xx_s, xx_row);
  seen_.insert({en_row, xx_row, lang, image});
  c_->pairs.en.push_back(en_row);
  c_->pairs.xx.push_back(xx_row);
  c_->pairs.lang.push_back(lang);
  c_->pairs.image.push_back(image);
  c_->pairs.source.push_back(this->source(source));
  ++r_->pairs_kept;
  ++r_->kept_per_language[c_->meta.languages.at(lang)];
  return true;
}

}  // namespace xv
