// WordPiece as the `tokenizers` library runs it (models/wordpiece): greedy longest-match-first from the
// start of the word, continuation pieces carrying the "##" prefix; a word with a piece that cannot be
// matched, or longer than max_input_chars_per_word characters, becomes one unk token.
#include "core/error.h"
#include "tokenizer/model.h"

namespace xv::tok {

namespace {

class WordPieceModel final : public TokenModel {
 public:
  WordPieceModel(const json& j, const JsonAt& at) : file_(at.file) {
    vocab_ = Vocab::parse(json_member(j, at, "vocab"), at / "vocab");
    unk_ = json_string_or(j, at, "unk_token", "[UNK]");
    prefix_ = json_string_or(j, at, "continuing_subword_prefix", "##");
    max_chars_ = json_int_or(j, at, "max_input_chars_per_word", 100);
    if (max_chars_ < 0) (at / "max_input_chars_per_word").fail(fmt::format("expected >= 0, got {}", max_chars_));
  }

  void tokenize(std::string_view word, std::vector<int32_t>& out) const override {
    if (word.empty()) return;
    int64_t chars = 0;
    for (char c : word) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    if (chars > max_chars_) {
      out.push_back(unk_id());
      return;
    }
    const size_t mark = out.size();
    std::string key;
    size_t start = 0;
    while (start < word.size()) {
      size_t end = word.size();
      int32_t found = -1;
      while (start < end) {
        std::string_view sub = word.substr(start, end - start);
        if (start > 0) {
          key.assign(prefix_);
          key += sub;
          found = vocab_.find(key);
        } else {
          found = vocab_.find(sub);
        }
        if (found >= 0) break;
        do --end;  // drop the last character
        while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
      }
      if (found < 0) {
        out.resize(mark);
        out.push_back(unk_id());
        return;
      }
      out.push_back(found);
      start = end;
    }
  }

 private:
  int32_t unk_id() const {
    int32_t id = vocab_.find(unk_);
    if (id < 0)
      fail("{}: field 'model.unk_token': \"{}\" is not in model.vocab (needed for a word the vocab cannot spell)",
           file_, unk_);
    return id;
  }

  std::string file_, unk_, prefix_;
  int64_t max_chars_ = 100;
};

}  // namespace

std::unique_ptr<TokenModel> make_wordpiece_model(const json& j, const JsonAt& at) {
  return std::make_unique<WordPieceModel>(j, at);
}

}  // namespace xv::tok
