#include "tokenizer/pretokenize.h"

#include "core/error.h"
#include "tokenizer/normalize.h"
#include "tokenizer/unicode.h"

namespace xv::tok {

PrependScheme parse_prepend_scheme(const json& j, const JsonAt& at) {
  PrependScheme scheme = PrependScheme::Always;
  if (const json* v = json_member_opt(j, at, "prepend_scheme")) {
    std::string s = json_string(*v, at / "prepend_scheme");
    if (s == "first")
      scheme = PrependScheme::First;
    else if (s == "always")
      scheme = PrependScheme::Always;
    else if (s == "never")
      scheme = PrependScheme::Never;
    else
      (at / "prepend_scheme").fail(fmt::format("expected \"first\", \"always\" or \"never\", got \"{}\"", s));
  }
  if (!json_bool_or(j, at, "add_prefix_space", true) && scheme == PrependScheme::Always) scheme = PrependScheme::Never;
  return scheme;
}

namespace {

void push_word(std::vector<Word>& out, std::string_view text, bool at_origin) {
  if (!text.empty()) out.push_back({std::string(text), at_origin});
}

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, PrependScheme scheme, bool split) : scheme_(scheme), split_(split) {
    utf8_append(rep_, replacement);
  }

  void split(const Word& piece, std::vector<Word>& out) const override {
    std::string s = replace_all(piece.text, " ", rep_);
    bool starts = s.compare(0, rep_.size(), rep_) == 0;
    bool prepend = scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && piece.at_origin);
    if (!starts && prepend) s.insert(0, rep_);
    if (!split_) {
      push_word(out, s, piece.at_origin);
      return;
    }
    // Split before every replacement character (MergedWithNext): "▁a▁▁b" -> "▁a", "▁", "▁b".
    size_t start = 0;
    for (size_t pos = s.find(rep_, 1); pos != std::string::npos; pos = s.find(rep_, pos + rep_.size())) {
      push_word(out, std::string_view(s).substr(start, pos - start), piece.at_origin && start == 0);
      start = pos;
    }
    push_word(out, std::string_view(s).substr(start), piece.at_origin && start == 0);
  }

 private:
  std::string rep_;
  PrependScheme scheme_;
  bool split_;
};

// Splits on whitespace (removed), then isolates each punctuation character (ASCII punctuation or P*).
class BertPreTokenizer final : public PreTokenizer {
 public:
  void split(const Word& piece, std::vector<Word>& out) const override {
    const std::string& s = piece.text;
    size_t start = 0;
    for (size_t i = 0; i < s.size();) {
      char32_t c;
      int len = utf8_decode(s, i, &c);
      bool ws = is_white_space(c);
      bool punct = !ws && ((c < 0x80 && is_ascii_punct(char(c))) || is_punctuation(c));
      if (ws || punct) {
        push_word(out, std::string_view(s).substr(start, i - start), piece.at_origin && start == 0);
        if (punct) push_word(out, std::string_view(s).substr(i, size_t(len)), piece.at_origin && i == 0);
        start = i + size_t(len);
      }
      i += size_t(len);
    }
    push_word(out, std::string_view(s).substr(start), piece.at_origin && start == 0);
  }

 private:
  static bool is_ascii_punct(char c) {
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
  }
};

class WhitespaceSplitPreTokenizer final : public PreTokenizer {
 public:
  void split(const Word& piece, std::vector<Word>& out) const override {
    const std::string& s = piece.text;
    size_t start = 0;
    for (size_t i = 0; i < s.size();) {
      char32_t c;
      int len = utf8_decode(s, i, &c);
      if (is_white_space(c)) {
        push_word(out, std::string_view(s).substr(start, i - start), piece.at_origin && start == 0);
        start = i + size_t(len);
      }
      i += size_t(len);
    }
    push_word(out, std::string_view(s).substr(start), piece.at_origin && start == 0);
  }
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void split(const Word& piece, std::vector<Word>& out) const override {
    std::vector<Word> cur{piece}, next;
    for (const auto& p : parts_) {
      next.clear();
      for (const Word& w : cur) p->split(w, next);
      cur.swap(next);
    }
    for (Word& w : cur) out.push_back(std::move(w));
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const JsonAt& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "Metaspace") {
    char32_t rep = json_char(json_member(j, at, "replacement"), at / "replacement");
    return std::make_unique<MetaspacePreTokenizer>(rep, parse_prepend_scheme(j, at),
                                                   json_bool_or(j, at, "split", true));
  }
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  if (type == "Sequence") {
    const JsonAt at_list = at / "pretokenizers";
    const json& list = json_array(json_member(j, at, "pretokenizers"), at_list);
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].is_null()) at_list[i].fail("expected a pre-tokenizer object, got null");
      parts.push_back(make_pre_tokenizer(list[i], at_list[i]));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  (at / "type")
      .fail(fmt::format("unknown or unsupported pre-tokenizer type \"{}\" (expected one of Metaspace, "
                        "BertPreTokenizer, WhitespaceSplit, Sequence)",
                        type));
}

}  // namespace xv::tok
