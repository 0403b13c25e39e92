// Gold ranks and the metrics built on them (eval/metrics.h).
#include "eval/metrics.h"

#include <cmath>

#include "core/error.h"

namespace xv {

int64_t gold_rank(const double* scores, int64_t n) {
  XV_CHECK(n >= 1, "gold_rank: a query needs at least one candidate, found {}", n);
  const double gold = scores[0];
  if (std::isnan(gold)) return n;  // a broken gold score cannot count as found
  int64_t higher = 0;
  for (int64_t c = 1; c < n; ++c) higher += scores[c] > gold;  // NaN compares false: never above the gold
  return 1 + higher;
}

RankMetrics rank_metrics(const std::vector<int64_t>& ranks) {
  RankMetrics m;
  m.queries = int64_t(ranks.size());
  if (ranks.empty()) return m;
  for (const int64_t r : ranks) {
    XV_CHECK(r >= 1, "rank_metrics: rank {} is below 1", r);
    m.p_at_1 += r == 1;
    m.r_at_5 += r <= 5;
    m.r_at_10 += r <= 10;
    m.mrr += 1.0 / double(r);
  }
  const double n = double(ranks.size());
  m.p_at_1 /= n;
  m.r_at_5 /= n;
  m.r_at_10 /= n;
  m.mrr /= n;
  m.p_at_5 = m.r_at_5 / 5;
  m.p_at_10 = m.r_at_10 / 10;
  return m;
}

}  // namespace xv
