// make_text_benchmark (eval/make_text_benchmark.h) on small corpora: the gold is the query's own pair at
// index 0, candidates are distinct texts of the right language's pool (the same pool for every query of a
// task), both directions use the same query
// pairs, ambiguous / duplicated / untranslated pairs never become queries, a seed gives the same benchmark
// and another seed another, too few texts is an error naming the language and the counts; and the path
// through an HDF5 file (write_corpus, read_corpus, write_benchmark, read_benchmark) gives the same benchmark.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "data/corpus.h"
#include "eval/benchmark.h"
#include "eval/make_text_benchmark.h"

namespace {

namespace fs = std::filesystem;

std::string tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("xv_eval_make_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// it: 60 one-to-one pairs, plus traps; es: `n_es` one-to-one pairs. English texts are shared across
// languages (a translated data set), as in the real corpora.
xv::Corpus small_corpus(int n_es = 40) {
  xv::Corpus c;
  c.sources.push("test");
  for (int i = 0; i < 60; ++i)
    c.add_pair("English sentence " + std::to_string(i), "frase italiana " + std::to_string(i), "it", -1, 0);
  // Traps (Italian): a duplicated pair (still one-to-one, so usable, but never asked twice), one English text
  // with two translations, one translation of two English texts, an untranslated string, an empty translation.
  c.add_pair("English sentence 0", "frase italiana 0", "it", -1, 0);
  c.add_pair("Open", "Apri", "it", -1, 0);
  c.add_pair("Open", "Aprire", "it", -1, 0);
  c.add_pair("Close", "Chiudi", "it", -1, 0);
  c.add_pair("Shut", "Chiudi", "it", -1, 0);
  c.add_pair("OK", "OK", "it", -1, 0);
  c.add_pair("Empty", "", "it", -1, 0);
  for (int i = 0; i < n_es; ++i)
    c.add_pair("English sentence " + std::to_string(i), "frase española " + std::to_string(i), "es", -1, 0);
  return c;
}

xv::TextBenchmarkOptions opts(int64_t candidates, int64_t queries, uint64_t seed = 0) {
  xv::TextBenchmarkOptions o;
  o.candidates = candidates;
  o.queries = queries;
  o.english = 20;
  o.seed = seed;
  o.langs = {"it", "es"};
  return o;
}

std::string error_of(const xv::Corpus& c, const xv::TextBenchmarkOptions& o) {
  try {
    xv::make_text_benchmark(c, o, "small.h5");
  } catch (const xv::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "make_text_benchmark accepted it";
  return "";
}

TEST(EvalMakeTextBenchmark, GoldFirstDistinctCandidatesFromTheRightPool) {
  const xv::Corpus c = small_corpus();
  // Per language: translation -> English and English -> translation, from the corpus, and the pools.
  std::map<std::string, std::multimap<std::string, std::string>> to_en, from_en;
  std::map<std::string, std::set<std::string>> en_pool, xx_pool;
  for (size_t p = 0; p < c.pairs.size(); ++p) {
    const std::string lang = c.meta.languages[c.pairs.lang[p]];
    const std::string en(c.text_en.at(size_t(c.pairs.en[p]))), xx(c.text_xx.at(size_t(c.pairs.xx[p])));
    to_en[lang].emplace(xx, en);
    from_en[lang].emplace(en, xx);
    if (!xx.empty()) en_pool[lang].insert(en), xx_pool[lang].insert(xx);
  }
  const xv::Benchmark b = xv::make_text_benchmark(c, opts(30, 25), "small.h5");
  ASSERT_EQ(b.tasks.size(), 4u);
  EXPECT_EQ(b.tasks[0].name, "it->en");
  EXPECT_EQ(b.tasks[0].direction, "xx->en");
  EXPECT_EQ(b.tasks[1].name, "en->it");
  EXPECT_EQ(b.tasks[1].direction, "en->xx");
  EXPECT_EQ(b.tasks[3].file, "en_to_es.jsonl");
  for (size_t t = 0; t < 4; ++t) {
    const auto& task = b.tasks[t];
    SCOPED_TRACE(task.name);
    const std::string& lang = task.language;
    const bool xx_to_en = task.direction == "xx->en";
    ASSERT_EQ(task.queries.size(), 25u);
    std::set<std::string> seen_queries;
    // Every query ranks the same pool: the task's candidate lists hold the same set of texts.
    const std::set<std::string> pool0(task.queries[0].candidates.begin(), task.queries[0].candidates.end());
    for (size_t q = 0; q < task.queries.size(); ++q) {
      const auto& qu = task.queries[q];
      EXPECT_EQ(qu.lang, lang);
      EXPECT_EQ(qu.task_type, "retrieval");
      ASSERT_EQ(qu.candidates.size(), 30u);
      EXPECT_EQ(std::set<std::string>(qu.candidates.begin(), qu.candidates.end()), pool0);
      EXPECT_TRUE(seen_queries.insert(qu.text).second) << "query twice: " << qu.text;
      // The query's pairs in the corpus: exactly one counterpart, and it is the gold.
      const auto& m = xx_to_en ? to_en[lang] : from_en[lang];
      const auto [lo, hi] = m.equal_range(qu.text);
      std::set<std::string> counterparts;
      for (auto it = lo; it != hi; ++it) counterparts.insert(it->second);
      ASSERT_EQ(counterparts.size(), 1u) << "ambiguous query: " << qu.text;
      EXPECT_EQ(qu.candidates[0], *counterparts.begin());
      // The gold is also unique on its side (no other text maps to it), and the string is translated.
      const auto& back = xx_to_en ? from_en[lang] : to_en[lang];
      std::set<std::string> back_parts;
      for (auto [b_lo, b_hi] = back.equal_range(qu.candidates[0]); b_lo != b_hi; ++b_lo) back_parts.insert(b_lo->second);
      EXPECT_EQ(back_parts, std::set<std::string>{qu.text}) << qu.candidates[0];
      EXPECT_NE(qu.text, qu.candidates[0]);
      const std::set<std::string> distinct(qu.candidates.begin(), qu.candidates.end());
      EXPECT_EQ(distinct.size(), qu.candidates.size());
      const auto& pool = xx_to_en ? en_pool[lang] : xx_pool[lang];
      for (const auto& cand : qu.candidates) EXPECT_TRUE(pool.count(cand)) << cand;
    }
  }
  // Both directions of a language ask about the same pairs, in the same order.
  for (size_t q = 0; q < 25; ++q) {
    EXPECT_EQ(b.tasks[0].queries[q].text, b.tasks[1].queries[q].candidates[0]);
    EXPECT_EQ(b.tasks[1].queries[q].text, b.tasks[0].queries[q].candidates[0]);
  }
  // Held-out English: distinct texts of the corpus.
  ASSERT_EQ(b.english.size(), 20u);
  const std::set<std::string> en(b.english.begin(), b.english.end());
  EXPECT_EQ(en.size(), 20u);
  for (const auto& t : b.english) EXPECT_TRUE(en_pool["it"].count(t) || t == "Empty") << t;
}

TEST(EvalMakeTextBenchmark, TheTrapsNeverBecomeQueries) {
  // Every usable Italian pair is asked for (60 one-to-one sentence pairs): the traps stay out.
  const xv::Corpus c = small_corpus();
  xv::TextBenchmarkOptions o = opts(60, 60);
  o.langs = {"it"};
  const xv::Benchmark b = xv::make_text_benchmark(c, o, "small.h5");
  for (const auto& q : b.tasks[0].queries)
    for (const char* trap : {"Apri", "Aprire", "Chiudi", "OK", ""}) EXPECT_NE(q.text, trap);
  o.candidates = o.queries = 61;
  std::string msg = error_of(c, o);
  EXPECT_NE(msg.find("small.h5: language 'it' has 60 usable pairs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fewer than the 61 candidates asked"), std::string::npos) << msg;
  o.candidates = 60;
  msg = error_of(c, o);
  EXPECT_NE(msg.find("--queries (61) must not exceed --candidates (60)"), std::string::npos) << msg;
}

TEST(EvalMakeTextBenchmark, DeterministicForASeed) {
  const xv::Corpus c = small_corpus();
  auto flat = [](const xv::Benchmark& b) {
    std::vector<std::string> v;
    for (const auto& t : b.tasks)
      for (const auto& q : t.queries) {
        v.push_back(q.text);
        v.insert(v.end(), q.candidates.begin(), q.candidates.end());
      }
    v.insert(v.end(), b.english.begin(), b.english.end());
    return v;
  };
  const auto a = flat(xv::make_text_benchmark(c, opts(30, 25, 7), "small.h5"));
  EXPECT_EQ(a, flat(xv::make_text_benchmark(c, opts(30, 25, 7), "small.h5")));
  EXPECT_NE(a, flat(xv::make_text_benchmark(c, opts(30, 25, 8), "small.h5")));
  // Asking for fewer languages leaves the others' choices as they were (one stream per language).
  xv::TextBenchmarkOptions only_es = opts(30, 25, 7);
  only_es.langs = {"es"};
  const xv::Benchmark es = xv::make_text_benchmark(c, only_es, "small.h5");
  const xv::Benchmark both = xv::make_text_benchmark(c, opts(30, 25, 7), "small.h5");
  EXPECT_EQ(es.tasks[0].queries[3].candidates, both.tasks[2].queries[3].candidates);
}

TEST(EvalMakeTextBenchmark, TooFewTextsNameTheLanguageAndCounts) {
  const xv::Corpus c = small_corpus(20);
  std::string msg = error_of(c, opts(25, 10));
  EXPECT_NE(msg.find("small.h5: language 'es' has 20 usable pairs (distinct, one-to-one, translated) of 20 distinct "
                     "pairs, fewer than the 25 candidates asked"),
            std::string::npos)
      << msg;
  xv::TextBenchmarkOptions o = opts(10, 5);
  o.langs = {"it", "fr"};
  msg = error_of(c, o);
  EXPECT_NE(msg.find("small.h5: language 'fr' is not in the corpus (it has: it,es)"), std::string::npos) << msg;
  o = opts(10, 5);
  o.english = 500;
  msg = error_of(c, o);
  EXPECT_NE(msg.find("the corpus has 65 distinct English texts, fewer than the 500 asked (--english)"),
            std::string::npos)
      << msg;
  // Five English texts share one translation: the translation pool is smaller than the English one.
  xv::Corpus d;
  d.sources.push("test");
  for (int i = 0; i < 5; ++i) d.add_pair("E" + std::to_string(i), "same", "it", -1, 0);
  for (int i = 0; i < 5; ++i) d.add_pair("F" + std::to_string(i), "T" + std::to_string(i), "it", -1, 0);
  o = opts(8, 2);
  o.langs = {"it"};
  msg = error_of(d, o);
  EXPECT_NE(msg.find("language 'it' has 5 usable pairs (distinct, one-to-one, translated) of 10 distinct pairs, "
                     "fewer than the 8 candidates asked"),
            std::string::npos)
      << msg;
}

TEST(EvalMakeTextBenchmark, ThroughFiles) {
  xv::Corpus c = small_corpus();
  const std::string d = tmp_dir("files");
  xv::write_corpus(d + "/heldout.h5", c);
  xv::ReadCorpusOptions ro;
  ro.images = false;
  const xv::Corpus back = xv::read_corpus(d + "/heldout.h5", ro);
  const xv::Benchmark from_file = xv::make_text_benchmark(back, opts(30, 25, 3), d + "/heldout.h5");
  xv::write_benchmark(d + "/bench", from_file);
  const xv::Benchmark read = xv::read_benchmark(d + "/bench");
  const xv::Benchmark in_memory = xv::make_text_benchmark(small_corpus(), opts(30, 25, 3), "memory");
  ASSERT_EQ(read.tasks.size(), in_memory.tasks.size());
  for (size_t t = 0; t < read.tasks.size(); ++t) {
    EXPECT_EQ(read.tasks[t].num_candidates, 30);
    EXPECT_EQ(read.tasks[t].num_queries, 25);
    for (size_t q = 0; q < read.tasks[t].queries.size(); ++q) {
      EXPECT_EQ(read.tasks[t].queries[q].text, in_memory.tasks[t].queries[q].text);
      EXPECT_EQ(read.tasks[t].queries[q].candidates, in_memory.tasks[t].queries[q].candidates);
    }
  }
  EXPECT_EQ(read.english, in_memory.english);
  fs::remove_all(d);
}

}  // namespace
