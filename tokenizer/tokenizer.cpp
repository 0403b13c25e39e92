// The tokenizer pipeline, in the `tokenizers` library's order:
//   1. added tokens that are not `normalized` are cut out of the raw text;
//   2. every other piece is normalized, and the `normalized` added tokens are cut out of it;
//   3. the pre-tokenizer splits the remaining pieces into words; the model turns each word into ids;
//   4. the post-processor adds the special tokens (when asked).
// Decoding maps ids back to token strings (added tokens first), drops the special ones when asked, and runs
// the decoder. Loading, added-token matching and post-processing live here; the parts have their own files.
#include "tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/file_util.h"
#include "tokenizer/decode.h"
#include "tokenizer/json.h"
#include "tokenizer/model.h"
#include "tokenizer/normalize.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace xv {

using tok::json;
using tok::JsonAt;

namespace {

struct AddedToken {
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  // What decode (and id_to_token) give for it: the content, normalized when the token is `normalized`
  // (as tokenizers 0.23 does; such a token then also escapes skip_special_tokens unless normalizing
  // leaves it unchanged).
  std::string decode_form;
  bool same_flags(const AddedToken& o) const {
    return content == o.content && single_word == o.single_word && lstrip == o.lstrip && rstrip == o.rstrip &&
           normalized == o.normalized && special == o.special;
  }
};

// Leftmost-longest search over a small set of literal patterns (the library uses Aho-Corasick with
// MatchKind::LeftmostLongest; added tokens are few, so candidates are bucketed by their first byte).
class TokenMatcher {
 public:
  void add(std::string pattern, int32_t id) {
    if (pattern.empty()) return;  // an empty pattern would match everywhere; the library never builds one
    by_first_[static_cast<unsigned char>(pattern[0])].push_back(patterns_.size());
    patterns_.push_back({std::move(pattern), id});
  }
  bool empty() const { return patterns_.empty(); }
  // Finds the next match at or after `from`: sets [*start, *stop) and returns its id, or -1.
  int32_t find(std::string_view s, size_t from, size_t* start, size_t* stop) const {
    for (size_t i = from; i < s.size(); ++i) {
      auto it = by_first_.find(static_cast<unsigned char>(s[i]));
      if (it == by_first_.end()) continue;
      const Pattern* best = nullptr;
      for (size_t k : it->second) {
        const Pattern& p = patterns_[k];
        if ((!best || p.text.size() > best->text.size()) && s.compare(i, p.text.size(), p.text) == 0) best = &p;
      }
      if (best) {
        *start = i;
        *stop = i + best->text.size();
        return best->id;
      }
    }
    return -1;
  }

 private:
  struct Pattern {
    std::string text;
    int32_t id;
  };
  std::vector<Pattern> patterns_;
  std::unordered_map<unsigned char, std::vector<size_t>> by_first_;
};

// A piece of the text on its way through the pipeline: either an added token (id >= 0) or text still to
// be tokenized.
struct Segment {
  std::string text;
  int32_t id = -1;
  bool at_origin = false;  // starts at offset 0 of the original text
};

// What the post-processor puts around the sequence: ids before and after it.
struct PostProcess {
  std::vector<int32_t> before, after;
};

char32_t first_char(std::string_view s) {
  char32_t c = 0;
  tok::utf8_decode(s, 0, &c);
  return c;
}

char32_t last_char(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return first_char(s.substr(i));
}

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::string fingerprint;
  int64_t truncation_max_length = 0;
  int32_t padding_id = -1;

  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::TokenModel> model;
  std::unique_ptr<tok::Decoder> decoder;
  std::optional<PostProcess> post;

  // The added vocabulary, as the library's AddedVocabulary.
  std::unordered_map<std::string, int32_t> added_ids;  // content -> id
  std::unordered_map<int32_t, AddedToken> added_by_id;
  std::vector<AddedToken> specials, classics;  // in the order they were added
  std::unordered_set<std::string> special_set;
  TokenMatcher raw_matcher, normalized_matcher;

  int32_t lookup(std::string_view t) const {
    auto it = added_ids.find(std::string(t));
    return it != added_ids.end() ? it->second : model->token_to_id(t);
  }

  void load(const json& root);
  void load_added_tokens(const json& list, const JsonAt& at);
  void add_token(const AddedToken& t);
  void build_matchers();
  void load_post_processor(const json& j, const JsonAt& at, PostProcess& pp) const;

  void split_added(const Segment& seg, const TokenMatcher& m, std::vector<Segment>& out) const;
};

// ---------------------------------------------------------------------------------------------------------
// Loading

void Tokenizer::Impl::load(const json& root) {
  const JsonAt at{path, ""};
  tok::json_object(root, at);
  if (const json* v = tok::json_member_opt(root, at, "version")) {
    std::string s = tok::json_string(*v, at / "version");
    if (s != "1.0") (at / "version").fail(fmt::format("expected \"1.0\", got \"{}\"", s));
  }
  if (const json* t = tok::json_member_opt(root, at, "truncation"))
    truncation_max_length =
        tok::json_int(tok::json_member(*t, at / "truncation", "max_length"), at / "truncation" / "max_length");
  if (const json* p = tok::json_member_opt(root, at, "padding")) {
    int64_t id = tok::json_int_or(*p, at / "padding", "pad_id", 0);
    if (id < 0 || id > INT32_MAX) (at / "padding" / "pad_id").fail(fmt::format("expected an id >= 0, got {}", id));
    padding_id = int32_t(id);
  }

  const json& m = tok::json_member(root, at, "model");
  const JsonAt at_m = at / "model";
  if (m.is_null()) at_m.fail("expected a model object, got null");
  tok::json_object(m, at_m);
  // Older files leave "type" out of the model; the library then guesses from the fields, as here.
  std::string type;
  if (m.contains("type"))
    type = tok::json_type(m, at_m);
  else if (m.contains("merges"))
    type = "BPE";
  else if (m.contains("max_input_chars_per_word") || m.contains("continuing_subword_prefix"))
    type = "WordPiece";
  else
    (at_m / "type").fail("missing (expected \"BPE\" or \"WordPiece\")");
  if (type == "BPE")
    model = tok::make_bpe_model(m, at_m);
  else if (type == "WordPiece")
    model = tok::make_wordpiece_model(m, at_m);
  else
    (at_m / "type")
        .fail(fmt::format("unknown or unsupported model type \"{}\" (expected \"BPE\" or \"WordPiece\")", type));

  if (const json* n = tok::json_member_opt(root, at, "normalizer"))
    normalizer = tok::make_normalizer(*n, at / "normalizer");
  if (const json* p = tok::json_member_opt(root, at, "pre_tokenizer"))
    pre_tokenizer = tok::make_pre_tokenizer(*p, at / "pre_tokenizer");
  if (const json* d = tok::json_member_opt(root, at, "decoder")) decoder = tok::make_decoder(*d, at / "decoder");
  if (const json* pp = tok::json_member_opt(root, at, "post_processor")) {
    post.emplace();
    load_post_processor(*pp, at / "post_processor", *post);
  }
  if (const json* a = tok::json_member_opt(root, at, "added_tokens")) load_added_tokens(*a, at / "added_tokens");
}

void Tokenizer::Impl::load_added_tokens(const json& list, const JsonAt& at) {
  tok::json_array(list, at);
  for (size_t i = 0; i < list.size(); ++i) {
    const JsonAt at_i = at[i];
    const json& e = tok::json_object(list[i], at_i);
    AddedToken t;
    t.content = tok::json_string(tok::json_member(e, at_i, "content"), at_i / "content");
    t.special = tok::json_bool_or(e, at_i, "special", false);
    t.single_word = tok::json_bool_or(e, at_i, "single_word", false);
    t.lstrip = tok::json_bool_or(e, at_i, "lstrip", false);
    t.rstrip = tok::json_bool_or(e, at_i, "rstrip", false);
    t.normalized = tok::json_bool_or(e, at_i, "normalized", !t.special);
    if (const json* id = tok::json_member_opt(e, at_i, "id")) tok::json_int(*id, at_i / "id");  // checked, not trusted
    add_token(t);
  }
  build_matchers();
}

// The library's AddedVocabulary::add_tokens for one token: a content already in the vocabulary keeps that
// id; a new one takes the next id past the model vocab (the file's "id" only feeds a warning there).
void Tokenizer::Impl::add_token(const AddedToken& t) {
  if (t.special && !t.content.empty() && !special_set.count(t.content)) {
    specials.push_back(t);
    special_set.insert(t.content);
  }
  if (t.content.empty()) return;
  for (const auto& [id, other] : added_by_id)
    if (other.same_flags(t)) return;
  int32_t id = lookup(t.content);
  if (id < 0) {
    const int64_t model_size = model->vocab_size();
    int64_t next = model_size;
    if (!added_ids.empty()) {
      int32_t max = 0;
      for (const auto& [c, i] : added_ids) max = std::max(max, i);
      next = (max >= model_size || model_size == 0) ? int64_t(max) + 1 : model_size;
    }
    XV_CHECK(next < INT32_MAX, "{}: field 'added_tokens': too many tokens", path);
    id = int32_t(next);
  }
  added_ids[t.content] = id;
  AddedToken& stored = added_by_id[id];
  stored = t;
  stored.decode_form = t.content;
  if (t.normalized && normalizer) normalizer->normalize(stored.decode_form);
  if (!special_set.count(t.content)) classics.push_back(t);
}

void Tokenizer::Impl::build_matchers() {
  auto add = [&](const AddedToken& t) {
    int32_t id = lookup(t.content);
    if (!t.normalized) {
      raw_matcher.add(t.content, id);
    } else {
      std::string pattern = t.content;
      if (normalizer) normalizer->normalize(pattern);
      normalized_matcher.add(std::move(pattern), id);
    }
  };
  for (const auto& t : specials) add(t);
  for (const auto& t : classics) add(t);
}

void Tokenizer::Impl::load_post_processor(const json& j, const JsonAt& at, PostProcess& pp) const {
  const std::string type = tok::json_type(j, at);
  if (type == "TemplateProcessing") {
    // special_tokens: name -> {"ids": [...]}
    std::unordered_map<std::string, std::vector<int32_t>> named;
    if (const json* st = tok::json_member_opt(j, at, "special_tokens")) {
      const JsonAt at_st = at / "special_tokens";
      tok::json_object(*st, at_st);
      for (const auto& [name, v] : st->items()) {
        const JsonAt at_n = at_st / name;
        const json& ids = tok::json_array(tok::json_member(v, at_n, "ids"), at_n / "ids");
        std::vector<int32_t> out;
        for (size_t k = 0; k < ids.size(); ++k) {
          int64_t id = tok::json_int(ids[k], (at_n / "ids")[k]);
          if (id < 0 || id >= INT32_MAX) (at_n / "ids")[k].fail(fmt::format("expected an id >= 0, got {}", id));
          out.push_back(int32_t(id));
        }
        named[name] = std::move(out);
      }
    }
    const JsonAt at_single = at / "single";
    const json& single = tok::json_member(j, at, "single");
    // Pieces: {"SpecialToken": {"id": name}} or {"Sequence": {"id": "A"}}; the string form "<s> $A" too.
    std::vector<std::pair<bool, std::string>> pieces;  // (is_sequence, special name)
    if (single.is_string()) {
      std::string s = tok::json_string(single, at_single);
      size_t pos = 0;
      while (pos < s.size()) {
        size_t end = s.find(' ', pos);
        if (end == std::string::npos) end = s.size();
        std::string w = s.substr(pos, end - pos);
        pos = end + 1;
        if (w.empty()) continue;
        std::string base = w.substr(0, w.find(':'));
        if (base == "$" || base == "$A" || base == "$0")
          pieces.push_back({true, ""});
        else if (base[0] == '$')
          at_single.fail(fmt::format("expected $A in the single-sequence template, got {}", w));
        else
          pieces.push_back({false, base});
      }
    } else {
      tok::json_array(single, at_single);
      for (size_t k = 0; k < single.size(); ++k) {
        const JsonAt at_k = at_single[k];
        const json& p = tok::json_object(single[k], at_k);
        if (p.contains("Sequence")) {
          pieces.push_back({true, ""});
        } else if (p.contains("SpecialToken")) {
          const json& sp = p["SpecialToken"];
          pieces.push_back({false, tok::json_string(tok::json_member(sp, at_k / "SpecialToken", "id"),
                                                    at_k / "SpecialToken" / "id")});
        } else {
          at_k.fail("expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
        }
      }
    }
    bool seen_sequence = false;
    for (const auto& [is_seq, name] : pieces) {
      if (is_seq) {
        seen_sequence = true;
        continue;
      }
      auto it = named.find(name);
      if (it == named.end())
        (at / "special_tokens")
            .fail(fmt::format("the template names \"{}\", which special_tokens does not define", name));
      auto& dst = seen_sequence ? pp.after : pp.before;
      dst.insert(dst.end(), it->second.begin(), it->second.end());
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    // "cls": ["[CLS]", 101], "sep": ["[SEP]", 102] -> [CLS] $A [SEP]
    for (const char* key : {"cls", "sep"}) {
      const JsonAt at_k = at / key;
      const json& v = tok::json_array(tok::json_member(j, at, key), at_k);
      if (v.size() != 2) at_k.fail("expected [token, id]");
      int64_t id = tok::json_int(v[1], at_k[1]);
      if (id < 0 || id >= INT32_MAX) at_k[1].fail(fmt::format("expected an id >= 0, got {}", id));
      (std::string(key) == "cls" ? pp.before : pp.after).push_back(int32_t(id));
    }
  } else {
    (at / "type")
        .fail(fmt::format("unknown or unsupported post-processor type \"{}\" (expected one of TemplateProcessing, "
                          "BertProcessing, RobertaProcessing)",
                          type));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

// The library's AddedVocabulary::find_matches: cuts `seg` at the added tokens `m` finds, honouring their
// single_word, lstrip and rstrip flags. Pieces keep whether they start the original text.
void Tokenizer::Impl::split_added(const Segment& seg, const TokenMatcher& m, std::vector<Segment>& out) const {
  const std::string_view s = seg.text;
  auto emit = [&](size_t a, size_t b, int32_t id) {
    if (b > a) out.push_back({std::string(s.substr(a, b - a)), id, seg.at_origin && a == 0});
  };
  if (m.empty()) {
    emit(0, s.size(), -1);
    return;
  }
  size_t start_offset = 0, from = 0, start = 0, stop = 0;
  for (int32_t id; (id = m.find(s, from, &start, &stop)) >= 0;) {
    from = stop;  // the search resumes after the match, whatever is done with it
    const AddedToken& t = added_by_id.at(id);
    if (t.single_word) {
      bool start_ok = start == 0 || !tok::is_word_char(last_char(s.substr(0, start)));
      bool stop_ok = stop == s.size() || !tok::is_word_char(first_char(s.substr(stop)));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) {
      size_t ns = start;
      while (ns > 0) {
        size_t p = ns - 1;
        while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
        if (!tok::is_white_space(first_char(s.substr(p)))) break;
        ns = p;
      }
      start = std::max(ns, start_offset);
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        char32_t c;
        int len = tok::utf8_decode(s, stop, &c);
        if (!tok::is_white_space(c)) break;
        stop += size_t(len);
      }
    }
    if (start_offset < start) emit(start_offset, start, -1);
    emit(start, stop, id);
    start_offset = stop;
  }
  if (start_offset < s.size()) emit(start_offset, s.size(), -1);
}

// ---------------------------------------------------------------------------------------------------------

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) { return from_json(read_file(path), path); }

std::unique_ptr<Tokenizer> Tokenizer::from_json(std::string_view json_text, const std::string& name) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  Impl& im = *t->impl_;
  im.path = name;
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : json_text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  im.fingerprint = fmt::format("{:016x}", h);
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON (expected a tokenizer.json): {}", name, e.what());
  }
  try {
    im.load(root);
  } catch (const json::exception& e) {  // a safety net: the typed accessors should have caught it first
    fail("{}: unexpected structure (expected a tokenizer.json): {}", name, e.what());
  }
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& im = *impl_;
  size_t bad = tok::utf8_invalid_at(text);
  XV_CHECK(bad == std::string_view::npos,
           "{}: cannot tokenize: the text is not valid UTF-8 (invalid byte 0x{:02X} at offset {} of {})", im.path,
           static_cast<unsigned char>(text[bad]), bad, text.size());
  std::vector<Segment> raw, pieces;
  im.split_added({std::string(text), -1, true}, im.raw_matcher, raw);
  for (Segment& seg : raw) {
    if (seg.id >= 0) {
      pieces.push_back(std::move(seg));
      continue;
    }
    if (im.normalizer) im.normalizer->normalize(seg.text);
    im.split_added(seg, im.normalized_matcher, pieces);
  }

  std::vector<int32_t> ids;
  if (add_special_tokens && im.post) ids = im.post->before;
  std::vector<tok::Word> words;
  for (const Segment& seg : pieces) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    if (!im.pre_tokenizer) {
      im.model->tokenize(seg.text, ids);
      continue;
    }
    words.clear();
    im.pre_tokenizer->split({seg.text, seg.at_origin}, words);
    for (const tok::Word& w : words) im.model->tokenize(w.text, ids);
  }
  if (add_special_tokens && im.post) ids.insert(ids.end(), im.post->after.begin(), im.post->after.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Impl& im = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* t = nullptr;
    auto it = im.added_by_id.find(id);
    if (it != im.added_by_id.end())
      t = &it->second.decode_form;
    else
      t = im.model->id_to_token(id);
    if (!t || (skip_special_tokens && im.special_set.count(*t))) continue;
    tokens.push_back(*t);
  }
  std::string out;
  if (!im.decoder) {
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  im.decoder->decode_chain(tokens);
  for (const auto& t : tokens) out += t;
  return out;
}

int32_t Tokenizer::token_to_id(std::string_view t) const { return impl_->lookup(t); }

std::string Tokenizer::id_to_token(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return it->second.decode_form;
  const std::string* t = impl_->model->id_to_token(id);
  return t ? *t : std::string();
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->special_set.count(it->second.decode_form);
}

int64_t Tokenizer::vocab_size() const {
  // The library's get_vocab_size(with_added_tokens=true): distinct contents of the model vocab and the
  // added tokens.
  int64_t n = impl_->model->vocab_size();
  for (const auto& [content, id] : impl_->added_ids) n += impl_->model->token_to_id(content) < 0;
  return n;
}

std::string Tokenizer::fingerprint() const { return impl_->fingerprint; }
int64_t Tokenizer::truncation_max_length() const { return impl_->truncation_max_length; }
int32_t Tokenizer::padding_id() const { return impl_->padding_id; }

}  // namespace xv
