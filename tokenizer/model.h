// tokenizer.json models (BPE, WordPiece): one word in, ids out. Internal to the tokenizer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/json.h"

namespace xv::tok {

// std::string keys looked up by std::string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// A model's "vocab": token -> id and back.
struct Vocab {
  StringIdMap to_id;
  std::unordered_map<int32_t, std::string> to_token;

  // `j` must be an object of token -> non-negative integer id.
  static Vocab parse(const json& j, const JsonAt& at);
  int32_t find(std::string_view tok) const {
    auto it = to_id.find(tok);
    return it == to_id.end() ? -1 : it->second;
  }
};

class TokenModel {
 public:
  virtual ~TokenModel() = default;
  // Appends the ids of one pre-tokenized word (valid UTF-8). Throws xv::Error when the model needs its
  // unk_token and the vocab lacks it (as the library does, at encode time).
  virtual void tokenize(std::string_view word, std::vector<int32_t>& out) const = 0;

  int32_t token_to_id(std::string_view tok) const { return vocab_.find(tok); }
  const std::string* id_to_token(int32_t id) const {
    auto it = vocab_.to_token.find(id);
    return it == vocab_.to_token.end() ? nullptr : &it->second;
  }
  int64_t vocab_size() const { return int64_t(vocab_.to_id.size()); }

 protected:
  Vocab vocab_;
};

// `j` is the "model" object at `at`.
std::unique_ptr<TokenModel> make_bpe_model(const json& j, const JsonAt& at);
std::unique_ptr<TokenModel> make_wordpiece_model(const json& j, const JsonAt& at);

}  // namespace xv::tok
