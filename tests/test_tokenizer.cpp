// Unit tests of the tokenizer: bad tokenizer.json files and bad input give an xv::Error naming the file and
// the field; a few behaviours on a tiny hand-made BPE. The expected ids below were checked against the
// Hugging Face `tokenizers` library (0.23); the golden comparison on real text is test_tokenizer_golden.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

// A tiny Llama-like BPE: <unk>, letters, a few merged tokens, three byte tokens and <s> as a special token.
json tiny_bpe(const json& merges) {
  json added = json::array();
  added.push_back({{"id", 10},
                   {"content", "<s>"},
                   {"special", true},
                   {"normalized", false},
                   {"lstrip", false},
                   {"rstrip", false},
                   {"single_word", false}});
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single",
             {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair", json::array()},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {10}}, {"tokens", {"<s>"}}}}}}}},
          {"decoder", nullptr},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "<unk>"},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"vocab",
             {{"<unk>", 0},
              {"a", 1},
              {"b", 2},
              {"c", 3},
              {"ab", 4},
              {"bc", 5},
              {"abc", 6},
              {"<0x78>", 7},
              {"<0xC3>", 8},
              {"<0xA9>", 9},
              {"<s>", 10}}},
            {"merges", merges}}}};
}

std::unique_ptr<xv::Tokenizer> load(const json& j) { return xv::Tokenizer::from_json(j.dump(), "tiny/tokenizer.json"); }

// The message of the xv::Error that `f` throws; fails the test when it throws nothing.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const xv::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an xv::Error";
  return "";
}

std::string load_error(const json& j) {
  return error_of([&] { load(j); });
}

// A scratch folder for files the tests write.
class TempDir {
 public:
  TempDir() : path_(std::filesystem::temp_directory_path() / ("xv_tokenizer_test_" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }

 private:
  std::filesystem::path path_;
};

TEST(Tokenizer, BpeMergesFollowRank) {
  EXPECT_EQ(load(tiny_bpe({"b c", "a b", "a bc"}))->encode("abc", false), (Ids{6}));
  EXPECT_EQ(load(tiny_bpe({"b c", "a b", "a bc"}))->encode("abcabc", true), (Ids{10, 6, 6}));
  EXPECT_EQ(load(tiny_bpe({"a b", "b c", "ab c"}))->encode("abc", false), (Ids{6}));
  EXPECT_EQ(load(tiny_bpe({"b c", "a b"}))->encode("abc", false), (Ids{1, 5}));
  EXPECT_EQ(load(tiny_bpe({"b c", "a b"}))->encode("ababc", false), (Ids{4, 1, 5}));
  // The list form of merges gives the same model.
  const json list_form = json::array({json::array({"b", "c"}), json::array({"a", "b"})});
  EXPECT_EQ(load(tiny_bpe(list_form))->encode("ababc", false), (Ids{4, 1, 5}));
}

TEST(Tokenizer, BpeUnknownCharacters) {
  json j = tiny_bpe(json::array());
  EXPECT_EQ(load(j)->encode("zzaz", false), (Ids{0, 0, 1, 0}));
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(load(j)->encode("zzaz", false), (Ids{0, 1, 0}));
  j["model"]["byte_fallback"] = true;  // "x" and "é" have byte tokens, "z" does not
  EXPECT_EQ(load(j)->encode("x\xC3\xA9z", false), (Ids{7, 8, 9, 0}));
}

TEST(Tokenizer, SpecialTokensAndDecode) {
  auto tok = load(tiny_bpe({"a b"}));
  EXPECT_EQ(tok->encode("", true), (Ids{10}));
  EXPECT_EQ(tok->encode("", false), (Ids{}));
  EXPECT_EQ(tok->encode("<s>a<s>", true), (Ids{10, 10, 1, 10}));
  // No decoder: tokens joined with spaces; unknown ids skipped; special tokens skipped on request.
  EXPECT_EQ(tok->decode({10, 1, 999, 2}, false), "<s> a b");
  EXPECT_EQ(tok->decode({10, 1, 2}, true), "a b");
  EXPECT_EQ(tok->token_to_id("<s>"), 10);
  EXPECT_EQ(tok->token_to_id("ab"), 4);
  EXPECT_EQ(tok->token_to_id("nope"), -1);
  EXPECT_EQ(tok->id_to_token(4), "ab");
  EXPECT_EQ(tok->id_to_token(-5), "");
  EXPECT_TRUE(tok->is_special(10));
  EXPECT_FALSE(tok->is_special(4));
  EXPECT_EQ(tok->vocab_size(), 11);
  EXPECT_EQ(tok->truncation_max_length(), 0);
  EXPECT_EQ(tok->padding_id(), -1);
}

TEST(Tokenizer, FingerprintIsTheFileHash) {
  TempDir dir;
  const std::string text = tiny_bpe({"a b"}).dump();
  auto a = xv::Tokenizer::from_file(dir.write("a.json", text));
  auto b = xv::Tokenizer::from_json(text, "b");
  auto c = xv::Tokenizer::from_json(text + " ", "c");
  EXPECT_EQ(a->fingerprint().size(), 16u);
  EXPECT_EQ(a->fingerprint(), b->fingerprint());
  EXPECT_NE(a->fingerprint(), c->fingerprint());
  EXPECT_EQ(a->fingerprint().find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(Tokenizer, InvalidUtf8InputIsAnError) {
  auto tok = load(tiny_bpe({"a b"}));
  for (const std::string& bad : {std::string("ab\xFF"), std::string("ab\xC0\xAF"), std::string("ab\xED\xA0\x80"),
                                 std::string("ab\xE2\x82"), std::string("ab\xF4\x90\x80\x80"), std::string("ab\x80")}) {
    std::string msg = error_of([&] { tok->encode(bad); });
    EXPECT_NE(msg.find("tiny/tokenizer.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("not valid UTF-8"), std::string::npos) << msg;
    EXPECT_NE(msg.find("offset 2"), std::string::npos) << msg;
  }
  EXPECT_EQ(tok->encode(std::string("a\0b", 3), false), (Ids{1, 0, 2}));  // NUL is valid UTF-8
}

TEST(Tokenizer, MissingOrCorruptFile) {
  std::string msg = error_of([] { xv::Tokenizer::from_file("/nonexistent/dir/tokenizer.json"); });
  EXPECT_NE(msg.find("/nonexistent/dir/tokenizer.json"), std::string::npos) << msg;

  TempDir dir;
  const std::string path = dir.write("corrupt.json", "{\"version\": \"1.0\", \"model\": {");
  msg = error_of([&] { xv::Tokenizer::from_file(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;

  msg = error_of([&] { xv::Tokenizer::from_file(dir.write("array.json", "[1, 2]")); });
  EXPECT_NE(msg.find("expected an object"), std::string::npos) << msg;
}

TEST(Tokenizer, MissingModel) {
  json j = tiny_bpe({"a b"});
  j.erase("model");
  std::string msg = load_error(j);
  EXPECT_NE(msg.find("tiny/tokenizer.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'model'"), std::string::npos) << msg;
  j["model"] = nullptr;
  EXPECT_NE(load_error(j).find("'model'"), std::string::npos);
}

TEST(Tokenizer, UnknownComponentTypes) {
  struct Case {
    const char* pointer;
    json value;
    const char* field;
    const char* word;
  };
  const std::vector<Case> cases = {
      {"/model/type", "Unigram", "'model.type'", "Unigram"},
      {"/normalizer", {{"type", "Precompiled"}}, "'normalizer.type'", "Precompiled"},
      {"/normalizer",
       {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Bogus"}}}}},
       "'normalizer.normalizers[1].type'",
       "Bogus"},
      {"/pre_tokenizer", {{"type", "ByteLevel"}}, "'pre_tokenizer.type'", "ByteLevel"},
      {"/decoder", {{"type", "CTC"}}, "'decoder.type'", "CTC"},
      {"/post_processor", {{"type", "ByteLevel"}}, "'post_processor.type'", "ByteLevel"},
      {"/normalizer",
       {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}},
       "'normalizer.pattern.Regex'",
       "not supported"},
      {"/normalizer", {{"kind", "NFC"}}, "'normalizer.type'", "missing"},
  };
  for (const Case& c : cases) {
    json j = tiny_bpe({"a b"});
    j[json::json_pointer(c.pointer)] = c.value;
    std::string msg = load_error(j);
    EXPECT_NE(msg.find("tiny/tokenizer.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.field), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.word), std::string::npos) << msg;
  }
}

TEST(Tokenizer, BadModelFields) {
  struct Case {
    const char* pointer;
    json value;
    const char* field;
    const char* word;
  };
  const std::vector<Case> cases = {
      {"/model/merges", {"a zz"}, "'model.merges[0]'", "\"zz\" is not in model.vocab"},
      {"/model/merges", {"a b", "q c"}, "'model.merges[1]'", "\"q\" is not in model.vocab"},
      {"/model/merges", {"b a"}, "'model.merges[0]'", "merged token \"ba\""},
      {"/model/merges", {"abc"}, "'model.merges[0]'", "exactly one space"},
      {"/model/merges", {"a b c"}, "'model.merges[0]'", "exactly one space"},
      {"/model/merges", {{"a"}}, "'model.merges[0]'", "[\"left\", \"right\"]"},
      {"/model/merges", {7}, "'model.merges[0]'", "expected a merge"},
      {"/model/merges", "a b", "'model.merges'", "expected an array"},
      {"/model/vocab", json::array(), "'model.vocab'", "expected an object"},
      {"/model/vocab/a", -1, "'model.vocab.a'", "expected an id"},
      {"/model/vocab/a", "one", "'model.vocab.a'", "expected an integer"},
      {"/model/fuse_unk", "yes", "'model.fuse_unk'", "expected true or false"},
      {"/model/dropout", 0.1, "'model.dropout'", "not supported"},
      {"/added_tokens/0/content", 3, "'added_tokens[0].content'", "expected a string"},
      {"/post_processor/single/0/SpecialToken/id", "</s>", "'post_processor.special_tokens'", "</s>"},
      {"/version", "2.0", "'version'", "expected \"1.0\""},
  };
  for (const Case& c : cases) {
    json j = tiny_bpe({"a b"});
    if (std::string(c.pointer) == "/model/vocab/a" || std::string(c.pointer) == "/model/fuse_unk" ||
        std::string(c.pointer) == "/model/dropout")
      j["model"]["merges"] = json::array();
    j[json::json_pointer(c.pointer)] = c.value;
    std::string msg = load_error(j);
    EXPECT_NE(msg.find("tiny/tokenizer.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.field), std::string::npos) << c.pointer << ": " << msg;
    EXPECT_NE(msg.find(c.word), std::string::npos) << c.pointer << ": " << msg;
  }
}

TEST(Tokenizer, MissingUnkTokenIsReportedWhenNeeded) {
  json j = tiny_bpe({"a b"});
  j["model"]["unk_token"] = "<missing>";
  auto tok = load(j);
  EXPECT_EQ(tok->encode("ab", false), (Ids{4}));  // the unk token is only needed for unknown characters
  std::string msg = error_of([&] { tok->encode("az"); });
  EXPECT_NE(msg.find("'model.unk_token'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("<missing>"), std::string::npos) << msg;
}

TEST(Tokenizer, WordPieceBasics) {
  json j = {{"version", "1.0"},
            {"added_tokens",
             {{{"id", 0}, {"content", "[UNK]"}, {"special", true}, {"normalized", false}},
              {{"id", 1}, {"content", "[CLS]"}, {"special", true}, {"normalized", false}},
              {{"id", 2}, {"content", "[SEP]"}, {"special", true}, {"normalized", false}}}},
            {"normalizer",
             {{"type", "BertNormalizer"},
              {"clean_text", true},
              {"handle_chinese_chars", true},
              {"strip_accents", nullptr},
              {"lowercase", true}}},
            {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
            {"post_processor", {{"type", "BertProcessing"}, {"sep", {"[SEP]", 2}}, {"cls", {"[CLS]", 1}}}},
            {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
            {"model",
             {{"type", "WordPiece"},
              {"unk_token", "[UNK]"},
              {"continuing_subword_prefix", "##"},
              {"max_input_chars_per_word", 100},
              {"vocab",
               {{"[UNK]", 0},
                {"[CLS]", 1},
                {"[SEP]", 2},
                {"un", 3},
                {"##aff", 4},
                {"##able", 5},
                {"cafe", 6},
                {".", 7},
                {"!", 8}}}}}};
  auto tok = xv::Tokenizer::from_json(j.dump(), "wp/tokenizer.json");
  EXPECT_EQ(tok->encode("Unaffable CAFÉ!", true), (Ids{1, 3, 4, 5, 6, 8, 2}));
  EXPECT_EQ(tok->encode("unaffable unknown.", false), (Ids{3, 4, 5, 0, 7}));
  EXPECT_EQ(tok->decode({1, 3, 4, 5, 6, 8, 2}, true), "unaffable cafe!");
  EXPECT_EQ(tok->decode({1, 3, 4, 5, 6, 8, 2}, false), "[CLS] unaffable cafe! [SEP]");
}

}  // namespace
