// Ranking metrics (eval/metrics.h) against numpy: tests/fixtures/eval/metrics_cases.json holds score
// matrices with planted ties and the ranks of a stable descending sort (tools/make_eval_fixtures.py), an
// independent way to get "ties favour the gold". Exact comparison for ranks, 1e-12 for the means.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"
#include "eval/metrics.h"

namespace {

using nlohmann::json;
const std::string kFix = XV_FIXTURES;

TEST(EvalMetrics, MatchesNumpyOnPlantedTies) {
  const json cases = json::parse(xv::read_file(kFix + "/eval/metrics_cases.json"))["cases"];
  ASSERT_GE(cases.size(), 4u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const auto scores = c["scores"].get<std::vector<std::vector<double>>>();
    const auto want = c["ranks"].get<std::vector<int64_t>>();
    ASSERT_EQ(scores.size(), want.size());
    std::vector<int64_t> ranks;
    for (size_t q = 0; q < scores.size(); ++q) {
      ranks.push_back(xv::gold_rank(scores[q].data(), int64_t(scores[q].size())));
      EXPECT_EQ(ranks.back(), want[q]) << "query " << q;
    }
    const xv::RankMetrics m = xv::rank_metrics(ranks);
    EXPECT_EQ(m.queries, int64_t(scores.size()));
    EXPECT_NEAR(m.p_at_1, c["p_at_1"].get<double>(), 1e-12);
    EXPECT_NEAR(m.r_at_5, c["r_at_5"].get<double>(), 1e-12);
    EXPECT_NEAR(m.mrr, c["mrr"].get<double>(), 1e-12);
  }
}

TEST(EvalMetrics, TiesFavourTheGoldAndNanNeverHelps) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double tie[] = {0.5, 0.5, 0.5, 0.4};
  EXPECT_EQ(xv::gold_rank(tie, 4), 1);
  const double nan_distractor[] = {0.1, nan, 0.2};
  EXPECT_EQ(xv::gold_rank(nan_distractor, 3), 2);  // NaN is not above the gold; 0.2 is
  const double nan_gold[] = {nan, 0.1, 0.2, 0.3};
  EXPECT_EQ(xv::gold_rank(nan_gold, 4), 4);  // a broken gold score is last, never first
  EXPECT_THROW(xv::gold_rank(tie, 0), xv::Error);
}

TEST(EvalMetrics, HandComputedMeans) {
  // Ranks 1, 2, 5, 6: P@1 1/4, R@5 3/4, MRR (1 + 1/2 + 1/5 + 1/6) / 4.
  const xv::RankMetrics m = xv::rank_metrics({1, 2, 5, 6});
  EXPECT_DOUBLE_EQ(m.p_at_1, 0.25);
  EXPECT_DOUBLE_EQ(m.r_at_5, 0.75);
  EXPECT_NEAR(m.mrr, (1 + 0.5 + 0.2 + 1.0 / 6) / 4, 1e-15);
  const xv::RankMetrics empty = xv::rank_metrics({});
  EXPECT_EQ(empty.queries, 0);
  EXPECT_EQ(empty.p_at_1, 0);
  EXPECT_THROW(xv::rank_metrics({1, 0}), xv::Error);
  // Ranks 1, 3, 7, 10, 11: R@5 2/5, R@10 4/5, P@5 = (1 + 1 + 0 + 0 + 0) / 5 / 5, P@10 = 4 / 5 / 10.
  const xv::RankMetrics k = xv::rank_metrics({1, 3, 7, 10, 11});
  EXPECT_DOUBLE_EQ(k.p_at_1, 0.2);
  EXPECT_DOUBLE_EQ(k.r_at_5, 0.4);
  EXPECT_DOUBLE_EQ(k.r_at_10, 0.8);
  EXPECT_DOUBLE_EQ(k.p_at_5, 0.08);
  EXPECT_DOUBLE_EQ(k.p_at_10, 0.08);
}

}  // namespace
