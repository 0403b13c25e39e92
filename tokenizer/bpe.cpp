// Byte-pair encoding as the `tokenizers` library runs it (models/bpe): each character becomes a symbol
// (or its <0xNN> byte tokens with byte_fallback, or the unk token, fused with its unknown neighbours when
// fuse_unk), then the pair with the lowest merge rank -- leftmost first on ties -- is merged until no
// ranked pair is left. A priority queue keyed on (rank, position) with lazy invalidation, as the library.
#include <array>
#include <optional>
#include <queue>

#include "core/error.h"
#include "tokenizer/model.h"

namespace xv::tok {

Vocab Vocab::parse(const json& j, const JsonAt& at) {
  json_object(j, at);
  Vocab v;
  v.to_id.reserve(j.size());
  v.to_token.reserve(j.size());
  for (const auto& [tok, idv] : j.items()) {
    const JsonAt at_tok = at / tok;
    int64_t id = json_int(idv, at_tok);
    if (id < 0 || id >= INT32_MAX) at_tok.fail(fmt::format("expected an id in [0, {}), got {}", INT32_MAX, id));
    v.to_id.emplace(tok, int32_t(id));
    v.to_token.emplace(int32_t(id), tok);
  }
  return v;
}

namespace {

struct MergeTarget {
  int32_t rank;
  int32_t new_id;
};

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

class BpeModel final : public TokenModel {
 public:
  BpeModel(const json& j, const JsonAt& at) : file_(at.file) {
    vocab_ = Vocab::parse(json_member(j, at, "vocab"), at / "vocab");
    if (const json* d = json_member_opt(j, at, "dropout")) {
      if (!d->is_number() || d->get<double>() != 0.0)
        (at / "dropout")
            .fail(fmt::format("expected null or 0 (BPE dropout is random and not supported), got {}", json_kind(*d)));
    }
    if (const json* u = json_member_opt(j, at, "unk_token")) unk_ = json_string(*u, at / "unk_token");
    if (const json* p = json_member_opt(j, at, "continuing_subword_prefix"))
      prefix_ = json_string(*p, at / "continuing_subword_prefix");
    if (const json* s = json_member_opt(j, at, "end_of_word_suffix"))
      suffix_ = json_string(*s, at / "end_of_word_suffix");
    fuse_unk_ = json_bool_or(j, at, "fuse_unk", false);
    byte_fallback_ = json_bool_or(j, at, "byte_fallback", false);
    ignore_merges_ = json_bool_or(j, at, "ignore_merges", false);
    for (int b = 0; b < 256; ++b) byte_ids_[size_t(b)] = vocab_.find(fmt::format("<0x{:02X}>", b));
    parse_merges(json_member(j, at, "merges"), at / "merges");
  }

  void tokenize(std::string_view word, std::vector<int32_t>& out) const override {
    if (word.empty()) return;
    if (ignore_merges_) {
      int32_t id = vocab_.find(word);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    std::vector<Symbol> sym;
    sym.reserve(word.size());
    split_chars(word, sym);
    merge_all(sym);
    for (const Symbol& s : sym)
      if (s.len != 0) out.push_back(s.id);
  }

 private:
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours in the linked list, -1 at the ends
    int32_t len;         // bytes covered; 0 once merged into its left neighbour
  };

  void parse_merges(const json& j, const JsonAt& at) {
    json_array(j, at);
    merges_.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
      const JsonAt at_i = at[i];
      std::string a, b;
      if (j[i].is_string()) {
        // "a b": exactly one space (the library rejects anything else).
        std::string s = json_string(j[i], at_i);
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          at_i.fail(fmt::format("expected a merge \"left right\" with exactly one space, got \"{}\"", s));
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (j[i].is_array()) {
        if (j[i].size() != 2)
          at_i.fail(fmt::format("expected a merge [\"left\", \"right\"], got {} items", j[i].size()));
        a = json_string(j[i][0], at_i[0]);
        b = json_string(j[i][1], at_i[1]);
      } else {
        at_i.fail(fmt::format("expected a merge as \"left right\" or [\"left\", \"right\"], got {}", json_kind(j[i])));
      }
      int32_t ia = vocab_.find(a), ib = vocab_.find(b);
      if (ia < 0) at_i.fail(fmt::format("token \"{}\" is not in model.vocab", a));
      if (ib < 0) at_i.fail(fmt::format("token \"{}\" is not in model.vocab", b));
      std::string merged = a;
      if (prefix_) {
        if (b.size() < prefix_->size())
          at_i.fail(fmt::format("token \"{}\" is shorter than continuing_subword_prefix", b));
        merged += b.substr(prefix_->size());
      } else {
        merged += b;
      }
      int32_t im = vocab_.find(merged);
      if (im < 0) at_i.fail(fmt::format("merged token \"{}\" is not in model.vocab", merged));
      // A repeated pair keeps its last rank, as the library's map does.
      merges_[pair_key(ia, ib)] = MergeTarget{int32_t(i), im};
    }
  }

  [[noreturn]] void fail_unk() const {
    fail("{}: field 'model.unk_token': \"{}\" is not in model.vocab (needed for a character the vocab lacks)", file_,
         *unk_);
  }

  void add(std::vector<Symbol>& sym, int32_t id, int32_t len) const {
    int32_t n = int32_t(sym.size());
    if (n > 0) sym.back().next = n;
    sym.push_back({id, n - 1, -1, len});
  }

  void split_chars(std::string_view word, std::vector<Symbol>& sym) const {
    int32_t unk_id = -1, unk_len = 0;  // a pending unk token and the bytes it covers
    std::string key;
    for (size_t i = 0; i < word.size();) {
      size_t len = 1;
      while (i + len < word.size() && (static_cast<unsigned char>(word[i + len]) & 0xC0) == 0x80) ++len;
      const bool first = i == 0, last = i + len == word.size();
      std::string_view ch = word.substr(i, len);
      std::string_view s = ch;
      if ((!first && prefix_) || (last && suffix_)) {
        key.clear();
        if (!first && prefix_) key += *prefix_;
        key += ch;
        if (last && suffix_) key += *suffix_;
        s = key;
      }
      i += len;
      int32_t id = vocab_.find(s);
      if (id >= 0) {
        if (unk_id >= 0) {
          add(sym, unk_id, unk_len);
          unk_id = -1;
        }
        add(sym, id, int32_t(len));
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (char c : s) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
        if (all) {
          // As the library: the byte tokens go in without flushing a pending unk first.
          for (char c : s) add(sym, byte_ids_[static_cast<unsigned char>(c)], 1);
          continue;
        }
      }
      if (unk_) {
        if (unk_id >= 0 && fuse_unk_) {
          unk_len += int32_t(len);
        } else {
          if (unk_id >= 0) add(sym, unk_id, unk_len);
          unk_id = vocab_.find(*unk_);
          if (unk_id < 0) fail_unk();
          unk_len = int32_t(len);
        }
      }
    }
    if (unk_id >= 0) add(sym, unk_id, unk_len);
  }

  struct Candidate {
    int32_t rank, pos, new_id;
  };
  struct Later {  // makes std::priority_queue pop the lowest rank, then the leftmost position
    bool operator()(const Candidate& a, const Candidate& b) const {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    }
  };

  const MergeTarget* find_merge(int32_t a, int32_t b) const {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  void merge_all(std::vector<Symbol>& sym) const {
    std::priority_queue<Candidate, std::vector<Candidate>, Later> queue;
    for (size_t i = 0; i + 1 < sym.size(); ++i)
      if (const MergeTarget* m = find_merge(sym[i].id, sym[i + 1].id)) queue.push({m->rank, int32_t(i), m->new_id});
    while (!queue.empty()) {
      Candidate top = queue.top();
      queue.pop();
      Symbol& cur = sym[size_t(top.pos)];
      if (cur.len == 0 || cur.next == -1) continue;
      const Symbol right = sym[size_t(cur.next)];
      // Skip stale entries: the pair at this position changed since it was queued.
      const MergeTarget* m = find_merge(cur.id, right.id);
      if (!m || m->new_id != top.new_id) continue;
      const int32_t right_pos = cur.next;
      cur.id = top.new_id;
      cur.len += right.len;
      cur.next = right.next;
      sym[size_t(right_pos)].len = 0;
      if (right.next >= 0) sym[size_t(right.next)].prev = top.pos;
      if (cur.prev >= 0) {
        if (const MergeTarget* p = find_merge(sym[size_t(cur.prev)].id, cur.id))
          queue.push({p->rank, cur.prev, p->new_id});
      }
      if (cur.next >= 0) {
        if (const MergeTarget* n = find_merge(cur.id, sym[size_t(cur.next)].id))
          queue.push({n->rank, top.pos, n->new_id});
      }
    }
  }

  std::string file_;
  std::optional<std::string> unk_, prefix_, suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};
  std::unordered_map<uint64_t, MergeTarget> merges_;  // (left id, right id) -> (rank, merged id)
};

}  // namespace

std::unique_ptr<TokenModel> make_bpe_model(const json& j, const JsonAt& at) {
  return std::make_unique<BpeModel>(j, at);
}

}  // namespace xv::tok
