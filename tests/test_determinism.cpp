// Same inputs give bit-identical embeddings whatever the thread count and however batches are spread
// over threads (DESIGN: determinism), and run to run.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "models/embedder.h"
#include "core/file_util.h"
#include "kernels/ops.h"

namespace {

TEST(Determinism, ThreadCountDoesNotChangeBits) {
  const std::string fix = XV_FIXTURES;
  auto model = xv::Embedder::load(fix + "/models/tiny_bert");
  std::vector<xv::EmbedItem> items;
  for (const auto& s : nlohmann::json::parse(xv::read_file(fix + "/models/tiny_bert_golden/sentences.json")))
    items.push_back({s.get<std::string>(), ""});
  xv::EmbedOptions opt;
  opt.batch_size = 3;  // many batches: they run concurrently when there are several threads
  const int before = xv::ops::num_threads();
  xv::ops::set_num_threads(1);
  xv::Tensor one = model->embed(items, opt);
  xv::ops::set_num_threads(2);
  xv::Tensor two = model->embed(items, opt);
  xv::Tensor again = model->embed(items, opt);
  opt.batch_size = 64;  // one batch, ops threaded inside
  xv::Tensor whole = model->embed(items, opt);
  xv::ops::set_num_threads(before);
  EXPECT_EQ(one.to_vector(), two.to_vector());
  EXPECT_EQ(two.to_vector(), again.to_vector());
  // A different batch composition pads differently; padding is masked, so only the GEMM blocking can
  // differ. Require near-equality here, bit-equality above.
  ASSERT_EQ(whole.shape(), one.shape());
  for (int64_t i = 0; i < one.numel(); ++i) ASSERT_NEAR(whole.at(int64_t(i)), one.at(int64_t(i)), 1e-5f) << i;
}

}  // namespace
