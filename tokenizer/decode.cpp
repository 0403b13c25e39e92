#include "tokenizer/decode.h"

#include "core/error.h"
#include "tokenizer/normalize.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace xv::tok {

namespace {

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = replace_all(t, pattern_, content_);
  }

 private:
  std::string pattern_, content_;
};

// Runs of <0xNN> tokens become the bytes they name when those form valid UTF-8, else one U+FFFD per byte.
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    size_t nbytes = 0;
    auto flush = [&] {
      if (nbytes == 0) return;
      if (utf8_invalid_at(bytes) == std::string::npos) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < nbytes; ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      nbytes = 0;
    };
    for (auto& t : tokens) {
      int b = byte_of(t);
      if (b >= 0) {
        bytes += char(b);
        ++nbytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }

 private:
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  // "<0xNN>" -> NN; Rust's u8::from_str_radix also takes "+N" for the two digits.
  static int byte_of(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    if (t[3] == '+') return hex(t[4]);
    int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters from every token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::u32string chars = utf8_to_u32(t);
      size_t a = 0;
      while (a < start_ && a < chars.size() && chars[a] == content_) ++a;
      size_t b = chars.size();
      for (size_t k = 0; k < stop_ && b > a && chars[b - 1] == content_; ++k) --b;
      t = u32_to_utf8(std::u32string_view(chars).substr(a, b - a));
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

// The replacement character becomes a space, except in the first token (all of its replacement characters
// are dropped there, a quirk of the library) unless prepend_scheme is "never".
class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, PrependScheme scheme) : scheme_(scheme) { utf8_append(rep_, replacement); }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = replace_all(tokens[i], rep_, i == 0 && scheme_ != PrependScheme::Never ? "" : " ");
  }

 private:
  std::string rep_;
  PrependScheme scheme_;
};

class WordPieceDecoder final : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (t.compare(0, prefix_.size(), prefix_) == 0)
          t = t.substr(prefix_.size());
        else
          t = std::string(1, ' ').append(t);
      }
      if (cleanup_) t = cleanup(t);
    }
  }

 private:
  // The library's cleanup: spaces before punctuation and English contractions.
  static std::string cleanup(std::string s) {
    static const std::pair<const char*, const char*> kRules[] = {
        {" .", "."},   {" ?", "?"},           {" !", "!"},   {" ,", ","},     {" ' ", "'"},   {" n't", "n't"},
        {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    if (s.find(' ') == std::string::npos) return s;  // every rule starts with a space
    for (const auto& [from, to] : kRules)
      if (s.find(from) != std::string::npos) s = replace_all(s, from, to);
    return s;
  }
  std::string prefix_;
  bool cleanup_;
};

size_t nonneg(const json& j, const JsonAt& at, const char* key, int64_t dflt) {
  int64_t v = json_int_or(j, at, key, dflt);
  if (v < 0) (at / key).fail(fmt::format("expected >= 0, got {}", v));
  return size_t(v);
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j, const JsonAt& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "Sequence") {
    const JsonAt at_list = at / "decoders";
    const json& list = json_array(json_member(j, at, "decoders"), at_list);
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].is_null()) at_list[i].fail("expected a decoder object, got null");
      parts.push_back(make_decoder(list[i], at_list[i]));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(json_string_pattern(json_member(j, at, "pattern"), at / "pattern"),
                                            json_string(json_member(j, at, "content"), at / "content"));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip")
    return std::make_unique<StripDecoder>(json_char(json_member(j, at, "content"), at / "content"),
                                          nonneg(j, at, "start", 0), nonneg(j, at, "stop", 0));
  if (type == "Metaspace")
    return std::make_unique<MetaspaceDecoder>(json_char(json_member(j, at, "replacement"), at / "replacement"),
                                              parse_prepend_scheme(j, at));
  if (type == "WordPiece")
    return std::make_unique<WordPieceDecoder>(json_string_or(j, at, "prefix", "##"),
                                              json_bool_or(j, at, "cleanup", true));
  (at / "type")
      .fail(fmt::format("unknown or unsupported decoder type \"{}\" (expected one of Sequence, Replace, ByteFallback, "
                        "Fuse, Strip, Metaspace, WordPiece)",
                        type));
}

}  // namespace xv::tok
