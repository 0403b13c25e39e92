#include "tokenizer/normalize.h"

#include <vector>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace xv::tok {

std::string replace_all(std::string_view s, std::string_view pattern, std::string_view content) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(pattern, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(content);
    pos = hit + pattern.size();
  }
  out.append(s.substr(pos));
  return out;
}

namespace {

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(std::string& s) const override {
    for (const auto& p : parts_) p->normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& s) const override { s = replace_all(s, pattern_, content_); }

 private:
  std::string pattern_, content_;
};

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void normalize(std::string& s) const override { s = unicode_normalize(s, form_); }

 private:
  NormalForm form_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::u32string out;
    out.reserve(s.size());
    for (char32_t c : utf8_to_u32(s)) append_lowercase(out, c);
    s = u32_to_utf8(out);
  }
};

bool is_chinese_char(char32_t c) {
  // The CJK blocks BERT calls "Chinese characters" (tokenizers' bert normalizer).
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// BERT's normalizer, steps in the library's order: clean_text, handle_chinese_chars, strip_accents (null:
// follow lowercase), lowercase.
class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool chinese, bool strip_accents, bool lowercase)
      : clean_text_(clean_text), chinese_(chinese), strip_accents_(strip_accents), lowercase_(lowercase) {}

  void normalize(std::string& s) const override {
    std::u32string cur = utf8_to_u32(s), next;
    next.reserve(cur.size());
    if (clean_text_) {
      for (char32_t c : cur) {
        if (c == 0 || c == 0xFFFD) continue;
        bool ws = c == U'\t' || c == U'\n' || c == U'\r' || is_white_space(c);
        if (!ws && is_other_class(c)) continue;
        next += ws ? U' ' : c;
      }
      cur.swap(next);
      next.clear();
    }
    if (chinese_) {
      for (char32_t c : cur) {
        if (is_chinese_char(c)) {
          next += U' ';
          next += c;
          next += U' ';
        } else {
          next += c;
        }
      }
      cur.swap(next);
      next.clear();
    }
    if (strip_accents_) {
      cur = utf8_to_u32(unicode_normalize(u32_to_utf8(cur), NormalForm::NFD));
      for (char32_t c : cur)
        if (!is_mark_nonspacing(c)) next += c;
      cur.swap(next);
      next.clear();
    }
    if (lowercase_) {
      for (char32_t c : cur) append_lowercase(next, c);
      cur.swap(next);
    }
    s = u32_to_utf8(cur);
  }

 private:
  bool clean_text_, chinese_, strip_accents_, lowercase_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const JsonAt& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "Sequence") {
    const JsonAt at_list = at / "normalizers";
    const json& list = json_array(json_member(j, at, "normalizers"), at_list);
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].is_null()) at_list[i].fail("expected a normalizer object, got null");
      parts.push_back(make_normalizer(list[i], at_list[i]));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(json_string(json_member(j, at, "prepend"), at / "prepend"));
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(json_string_pattern(json_member(j, at, "pattern"), at / "pattern"),
                                               json_string(json_member(j, at, "content"), at / "content"));
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKD);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "BertNormalizer") {
    bool lowercase = json_bool_or(j, at, "lowercase", true);
    return std::make_unique<BertNormalizer>(json_bool_or(j, at, "clean_text", true),
                                            json_bool_or(j, at, "handle_chinese_chars", true),
                                            json_bool_or(j, at, "strip_accents", lowercase), lowercase);
  }
  (at / "type")
      .fail(fmt::format("unknown normalizer type \"{}\" (expected one of Sequence, Prepend, Replace, NFC, NFD, NFKC, "
                        "NFKD, Lowercase, BertNormalizer)",
                        type));
}

}  // namespace xv::tok
