// Ranking metrics of one task: each query scores its candidates (the gold at index 0) and the gold's rank
// gives Precision@1, Recall@5 and MRR.
#pragma once
#include <cstdint>
#include <vector>

namespace xv {

// 1 + the number of candidates scoring strictly higher than the gold (scores[0]). Ties favour the gold, as
// an argmax that returns the first maximum does with the gold at index 0 (VLM2Vec's evaluation).
// scores: (n), n >= 1. A NaN score never outranks the gold; a NaN gold score ranks last.
int64_t gold_rank(const double* scores, int64_t n);

struct RankMetrics {
  int64_t queries = 0;
  double p_at_1 = 0;  // fraction of queries whose gold ranks first
  double r_at_5 = 0;  // fraction whose gold is in the top 5 (one relevant candidate: Recall@5 = Hit@5)
  double mrr = 0;     // mean of 1 / rank
};

// Metrics of a task from its queries' gold ranks (each >= 1). No queries: all zero.
RankMetrics rank_metrics(const std::vector<int64_t>& ranks);

}  // namespace xv
