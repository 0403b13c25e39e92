// Golden test of the tokenizer: every sentence of tests/fixtures/tokenizer/sentences.jsonl is encoded (with
// and without special tokens) and decoded (skipping and keeping special tokens) by three tokenizers, and
// compared with what the Hugging Face `tokenizers` library produced (tools/make_tokenizer_fixtures.py).
// Exact equality: ids and strings, no tolerance.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

using nlohmann::json;
const std::string kFixtures = std::string(XV_FIXTURES) + "/tokenizer";
const std::string kMiniLM = std::string(XV_BINARY_DIR) + "/models/all-MiniLM-L6-v2/tokenizer.json";

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  std::vector<json> out;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::string show(const std::vector<int32_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// Checks every sentence of `sentences_file` against `expected_file`; reports the number checked and the
// first mismatches with their text.
void check_sentences(const std::string& name, const xv::Tokenizer& tok, const std::string& sentences_file,
                     const std::string& expected_file, size_t min_sentences) {
  const auto sentences = read_jsonl(sentences_file);
  const auto expected = read_jsonl(expected_file);
  ASSERT_EQ(sentences.size(), expected.size()) << expected_file;
  ASSERT_GE(sentences.size(), min_sentences);

  size_t ok_ids = 0, ok_special = 0, ok_decoded = 0, ok_keep = 0, reported = 0;
  auto report = [&](const std::string& what, const std::string& text, const std::string& want, const std::string& got) {
    if (reported++ < 8)
      ADD_FAILURE() << name << ": " << what << " differs for " << json(text).dump() << "\n  expected " << want
                    << "\n  got      " << got;
  };
  for (size_t i = 0; i < sentences.size(); ++i) {
    const std::string text = sentences[i].get<std::string>();
    const json& e = expected[i];
    const auto want_ids = e["ids"].get<std::vector<int32_t>>();
    const auto want_special = e["ids_special"].get<std::vector<int32_t>>();
    const auto ids = tok.encode(text, false);
    const auto ids_special = tok.encode(text, true);
    if (ids == want_ids)
      ++ok_ids;
    else
      report("encode(add_special_tokens=false)", text, show(want_ids), show(ids));
    if (ids_special == want_special)
      ++ok_special;
    else
      report("encode(add_special_tokens=true)", text, show(want_special), show(ids_special));
    const std::string decoded = tok.decode(want_special, true), keep = tok.decode(want_special, false);
    if (decoded == e["decoded"].get<std::string>())
      ++ok_decoded;
    else
      report("decode(skip_special_tokens=true)", text, json(e["decoded"]).dump(), json(decoded).dump());
    if (keep == e["decoded_keep"].get<std::string>())
      ++ok_keep;
    else
      report("decode(skip_special_tokens=false)", text, json(e["decoded_keep"]).dump(), json(keep).dump());
  }
  const size_t n = sentences.size();
  std::printf(
      "[ tokenizer ] %s: %zu sentences; ids %zu/%zu, ids with specials %zu/%zu, decoded %zu/%zu, "
      "decoded keeping specials %zu/%zu match the library\n",
      name.c_str(), n, ok_ids, n, ok_special, n, ok_decoded, n, ok_keep, n);
  EXPECT_EQ(ok_ids, n) << name;
  EXPECT_EQ(ok_special, n) << name;
  EXPECT_EQ(ok_decoded, n) << name;
  EXPECT_EQ(ok_keep, n) << name;
}

void check_tokenizer(const std::string& name, const std::string& tokenizer_path) {
  ASSERT_TRUE(std::filesystem::exists(tokenizer_path)) << tokenizer_path << " is missing";
  auto tok = xv::Tokenizer::from_file(tokenizer_path);
  check_sentences(name, *tok, kFixtures + "/sentences.jsonl", kFixtures + "/expected_" + name + ".jsonl", 2000);

  // Vocabulary size and a few lookups, also from the library.
  std::ifstream mf(kFixtures + "/meta.json");
  const json meta = json::parse(mf)[name];
  EXPECT_EQ(tok->vocab_size(), meta["vocab_size"].get<int64_t>());
  for (const auto& [t, id] : meta["token_to_id"].items()) {
    EXPECT_EQ(tok->token_to_id(t), id.get<int32_t>()) << name << ": token_to_id(" << t << ")";
    if (id.get<int32_t>() >= 0) {
      EXPECT_EQ(tok->id_to_token(id.get<int32_t>()), t);
    }
  }
}

TEST(TokenizerGolden, BpeLlama) { check_tokenizer("bpe_llama", kFixtures + "/bpe_llama/tokenizer.json"); }

TEST(TokenizerGolden, BpeMetaspace) { check_tokenizer("bpe_metaspace", kFixtures + "/bpe_metaspace/tokenizer.json"); }

// The real all-MiniLM-L6-v2 tokenizer.json, from the model folder scripts/prepare-minilm.sh makes (ctest's
// fixture setup). Its absence is a failure, not a skip.
TEST(TokenizerGolden, MiniLM) {
  ASSERT_TRUE(std::filesystem::exists(kMiniLM))
      << kMiniLM << " is missing: run scripts/prepare-minilm.sh " XV_BINARY_DIR "/models/all-MiniLM-L6-v2";
  check_tokenizer("minilm", kMiniLM);
  auto tok = xv::Tokenizer::from_file(kMiniLM);
  EXPECT_EQ(tok->truncation_max_length(), 128);
  EXPECT_EQ(tok->padding_id(), 0);
}

// The same tokenizers with other options on: each variant is an RFC 6902 patch of a base tokenizer.json
// (variants/variants.json), checked on its own sentence set, its vocab size and decode of random id lists.
TEST(TokenizerGolden, Variants) {
  ASSERT_TRUE(std::filesystem::exists(kMiniLM))
      << kMiniLM << " is missing: run scripts/prepare-minilm.sh " XV_BINARY_DIR "/models/all-MiniLM-L6-v2";
  std::ifstream vf(kFixtures + "/variants/variants.json");
  const json variants = json::parse(vf);
  ASSERT_GE(variants.size(), 10u);
  for (const json& v : variants) {
    const std::string name = v["name"].get<std::string>(), base = v["base"].get<std::string>();
    const std::string base_path = base == "minilm" ? kMiniLM : kFixtures + "/" + base + "/tokenizer.json";
    std::ifstream bf(base_path);
    const json doc = json::parse(bf).patch(v["patch"]);
    auto tok = xv::Tokenizer::from_json(doc.dump(), name + " (" + base_path + " patched)");
    check_sentences(name, *tok, kFixtures + "/variants/sentences.jsonl",
                    kFixtures + "/variants/expected_" + name + ".jsonl", 200);
    EXPECT_EQ(tok->vocab_size(), v["vocab_size"].get<int64_t>()) << name;
    size_t ok = 0;
    for (const json& d : v["decode"]) {
      const auto ids = d["ids"].get<std::vector<int32_t>>();
      const bool same = tok->decode(ids, true) == d["decoded"].get<std::string>() &&
                        tok->decode(ids, false) == d["decoded_keep"].get<std::string>();
      ok += same;
      EXPECT_TRUE(same) << name << ": decode of " << show(ids) << " differs: expected " << d["decoded"].dump() << " / "
                        << d["decoded_keep"].dump() << ", got " << json(tok->decode(ids, true)).dump() << " / "
                        << json(tok->decode(ids, false)).dump();
    }
    std::printf("[ tokenizer ] %s: decode of %zu/%zu random id lists matches the library\n", name.c_str(), ok,
                v["decode"].size());
  }
}

}  // namespace
