// make_text_benchmark (eval/make_text_benchmark.h).
//
// Which pairs may be queries: of the distinct (English, translation) pairs of a language, those whose
// English text and whose translation each occur in no other pair of that language, and whose translation
// differs from its English text. One-to-one pairs make the gold the only right answer in both directions;
// an untranslated string would test string identity, not alignment.
// Candidates: per language, a pool of `candidates` usable pairs; every query of the language is one of the
// pool's pairs and ranks all of the pool's English texts (xx->en) or translations (en->xx). One-to-one pairs
// make every text of a candidate list distinct.
#include "eval/make_text_benchmark.h"

#include <algorithm>
#include <string_view>
#include <unordered_map>

#include "core/error.h"
#include "eval/sampling.h"

namespace xv {

namespace {

// Distinct strings in order of first appearance, with the index of each.
struct Pool {
  std::vector<std::string_view> texts;
  std::unordered_map<std::string_view, int64_t> index;
  int64_t add(std::string_view s) {
    auto [it, fresh] = index.emplace(s, int64_t(texts.size()));
    if (fresh) texts.push_back(s);
    return it->second;
  }
  int64_t size() const { return int64_t(texts.size()); }
};

struct PairKey {
  int64_t en, xx;  // pool indices
  bool operator==(const PairKey& o) const { return en == o.en && xx == o.xx; }
};
struct PairKeyHash {
  size_t operator()(const PairKey& k) const { return std::hash<int64_t>()(k.en * 1000003 + k.xx); }
};


}  // namespace

Benchmark make_text_benchmark(const Corpus& c, const TextBenchmarkOptions& opt, const std::string& where) {
  XV_CHECK(opt.candidates >= 2, "make-text-benchmark: --candidates must be at least 2 (the gold and a distractor), found {}",
           opt.candidates);
  XV_CHECK(opt.queries >= 1, "make-text-benchmark: --queries must be at least 1, found {}", opt.queries);
  XV_CHECK(opt.queries <= opt.candidates,
           "make-text-benchmark: --queries ({}) must not exceed --candidates ({}): the queries are pairs of the "
           "candidate pool", opt.queries, opt.candidates);
  XV_CHECK(opt.english >= 0, "make-text-benchmark: --english must be at least 0, found {}", opt.english);
  XV_CHECK(!opt.langs.empty(), "make-text-benchmark: --langs is empty");
  const size_t P = c.pairs.size();
  XV_CHECK(c.pairs.xx.size() == P && c.pairs.lang.size() == P, "{}: /pairs datasets of different lengths", where);

  auto en_text = [&](size_t p) {
    XV_CHECK(c.pairs.en[p] >= 0 && size_t(c.pairs.en[p]) < c.text_en.size(), "{}: /pairs/en[{}] = {} is out of range", where,
             p, c.pairs.en[p]);
    return c.text_en.at(size_t(c.pairs.en[p]));
  };
  auto xx_text = [&](size_t p) {
    XV_CHECK(c.pairs.xx[p] >= 0 && size_t(c.pairs.xx[p]) < c.text_xx.size(), "{}: /pairs/xx[{}] = {} is out of range", where,
             p, c.pairs.xx[p]);
    return c.text_xx.at(size_t(c.pairs.xx[p]));
  };

  Benchmark b;
  b.name = opt.name;
  b.source = opt.source;
  b.created_by = opt.created_by;
  for (const auto& lang : opt.langs) {
    XV_CHECK(lang != "en", "make-text-benchmark: --langs names 'en'; give the other languages (English is the pivot)");
    auto li = std::find(c.meta.languages.begin(), c.meta.languages.end(), lang);
    if (li == c.meta.languages.end()) {
      std::string have;
      for (const auto& l : c.meta.languages) have += (have.empty() ? "" : ",") + l;
      fail("{}: language '{}' is not in the corpus (it has: {})", where, lang, have.empty() ? "none" : have);
    }
    const auto code = uint8_t(li - c.meta.languages.begin());

    // The language's distinct pairs, and how many of them use each text.
    Pool en_pool, xx_pool;
    std::vector<PairKey> pairs;
    std::unordered_map<PairKey, int64_t, PairKeyHash> seen;
    for (size_t p = 0; p < P; ++p) {
      if (c.pairs.lang[p] != code) continue;
      const std::string_view en = en_text(p), xx = xx_text(p);
      if (en.empty() || xx.empty()) continue;  // nothing to retrieve, and no candidate may be empty
      const PairKey k{en_pool.add(en), xx_pool.add(xx)};
      if (seen.emplace(k, int64_t(pairs.size())).second) pairs.push_back(k);
    }
    std::vector<int64_t> en_uses(size_t(en_pool.size()), 0), xx_uses(size_t(xx_pool.size()), 0);
    for (const auto& k : pairs) ++en_uses[size_t(k.en)], ++xx_uses[size_t(k.xx)];
    std::vector<PairKey> usable;
    for (const auto& k : pairs)
      if (en_uses[size_t(k.en)] == 1 && xx_uses[size_t(k.xx)] == 1 && en_pool.texts[size_t(k.en)] != xx_pool.texts[size_t(k.xx)])
        usable.push_back(k);

    XV_CHECK(int64_t(usable.size()) >= opt.candidates,
             "{}: language '{}' has {} usable pairs (distinct, one-to-one, translated) of {} distinct pairs, fewer "
             "than the {} candidates asked (--candidates)",
             where, lang, usable.size(), pairs.size(), opt.candidates);

    // The pool: a seeded sample of `candidates` usable pairs, in corpus order; its first `queries` pairs are
    // the queries. Every query of a task ranks the same pool (its gold first, then the pool's other texts in
    // pool order), as in Tatoeba-style bitext retrieval: the pool's texts are embedded once.
    Stream pick(opt.seed, lang + "/pool");
    std::vector<int64_t> chosen = sample_excluding(int64_t(usable.size()) + 1, 0, opt.candidates, pick);
    for (auto& i : chosen) --i;  // sampled from [1, n]: shift to [0, n)
    std::sort(chosen.begin(), chosen.end());
    Stream order(opt.seed, lang + "/queries");
    std::vector<int64_t> qsel = sample_excluding(int64_t(chosen.size()) + 1, 0, opt.queries, order);
    for (auto& i : qsel) --i;
    std::sort(qsel.begin(), qsel.end());

    BenchmarkTask to_en, from_en;
    to_en.name = lang + "->en";
    to_en.file = lang + "_to_en.jsonl";
    to_en.direction = "xx->en";
    from_en.name = "en->" + lang;
    from_en.file = "en_to_" + lang + ".jsonl";
    from_en.direction = "en->xx";
    for (BenchmarkTask* t : {&to_en, &from_en}) {
      t->language = lang;
      t->task_type = "retrieval";
      t->num_queries = opt.queries;
      t->num_candidates = opt.candidates;
    }
    auto pool_texts = [&](const Pool& pool, int64_t gold_pos, bool en) {
      auto text = [&](int64_t pos) {
        const PairKey k = usable[size_t(chosen[size_t(pos)])];
        return std::string(pool.texts[size_t(en ? k.en : k.xx)]);
      };
      std::vector<std::string> out = {text(gold_pos)};
      for (int64_t i = 0; i < int64_t(chosen.size()); ++i)
        if (i != gold_pos) out.push_back(text(i));
      return out;
    };
    for (const int64_t qpos : qsel) {
      const PairKey k = usable[size_t(chosen[size_t(qpos)])];
      BenchmarkQuery a;
      a.text = std::string(xx_pool.texts[size_t(k.xx)]);
      a.candidates = pool_texts(en_pool, qpos, true);
      a.lang = lang;
      a.task_type = "retrieval";
      to_en.queries.push_back(std::move(a));
      BenchmarkQuery e;
      e.text = std::string(en_pool.texts[size_t(k.en)]);
      e.candidates = pool_texts(xx_pool, qpos, false);
      e.lang = lang;
      e.task_type = "retrieval";
      from_en.queries.push_back(std::move(e));
    }
    b.tasks.push_back(std::move(to_en));
    b.tasks.push_back(std::move(from_en));
  }

  // Held-out English: distinct English texts of the whole corpus (any language's pairs).
  if (opt.english > 0) {
    Pool all_en;
    for (size_t p = 0; p < P; ++p)
      if (const std::string_view en = en_text(p); !en.empty()) all_en.add(en);
    XV_CHECK(all_en.size() >= opt.english,
             "{}: the corpus has {} distinct English texts, fewer than the {} asked (--english)", where, all_en.size(),
             opt.english);
    Stream pick(opt.seed, "english");
    std::vector<int64_t> chosen = sample_excluding(all_en.size() + 1, 0, opt.english, pick);
    std::sort(chosen.begin(), chosen.end());
    for (const int64_t i : chosen) b.english.emplace_back(all_en.texts[size_t(i - 1)]);
  }
  return b;
}

}  // namespace xv
