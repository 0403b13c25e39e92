// Ranking metrics of one task: each query scores its candidates (the gold at index 0) and the gold's rank
// gives Precision@k, Recall@k (k = 1, 5, 10) and MRR.
#pragma once
#include <cstdint>
#include <vector>

namespace xv {

// 1 + the number of candidates scoring strictly higher than the gold (scores[0]). Ties favour the gold, as
// an argmax that returns the first maximum does with the gold at index 0 (VLM2Vec's evaluation).
// scores: (n), n >= 1. A NaN score never outranks the gold; a NaN gold score ranks last.
int64_t gold_rank(const double* scores, int64_t n);

// With one relevant candidate per query (the gold), Recall@k is the fraction of queries whose gold is in the top
// k (Hit@k), and Precision@k the mean over queries of (gold in the top k) / k: P@1 = R@1, MMEB's headline.
struct RankMetrics {
  int64_t queries = 0;
  double p_at_1 = 0;   // fraction of queries whose gold ranks first
  double p_at_5 = 0;   // R@5 / 5
  double p_at_10 = 0;  // R@10 / 10
  double r_at_5 = 0;   // fraction whose gold is in the top 5
  double r_at_10 = 0;  // fraction whose gold is in the top 10
  double mrr = 0;      // mean of 1 / rank

  // fn(name, value) for every metric, in report order: p_at_1, p_at_5, p_at_10, r_at_5, r_at_10, mrr.
  template <typename F>
  void each(F fn) {
    fn("p_at_1", p_at_1), fn("p_at_5", p_at_5), fn("p_at_10", p_at_10), fn("r_at_5", r_at_5),
        fn("r_at_10", r_at_10), fn("mrr", mrr);
  }
  template <typename F>
  void each(F fn) const {
    const_cast<RankMetrics*>(this)->each([&](const char* n, double& v) { fn(n, double(v)); });
  }
};

// Metrics of a task from its queries' gold ranks (each >= 1). No queries: all zero.
RankMetrics rank_metrics(const std::vector<int64_t>& ranks);

}  // namespace xv
