// The self-KD training step on the tiny BERT against PyTorch + PEFT (tools/make_train_fixtures.py):
// the same initial LoRA weights; loss of step 1 within 1e-5 relative, every LoRA gradient of step 1
// within 1e-4, the losses of 10 AdamW steps (clipping, cosine warmup schedule) within 1e-4, and the final
// adapters close.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "models/kd/kd_model.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"
#include "train/schedule.h"
#include "core/safetensors.h"

namespace {

using nlohmann::json;
const std::string kFix = XV_FIXTURES;
const std::string kDir = kFix + "/train/tiny_bert";

// Loads the trainable tensors (PEFT names) from a safetensors file.
void load_trainable(xv::KdModel& m, const std::string& path) {
  auto ws = xv::WeightStore::open_file(path);
  for (auto& t : m.trainable()) *t.value = ws.get(t.name, t.value->shape());
}

// max |got - want| / max |want| over a tensor.
double rel_err(const xv::Tensor& got, const xv::Tensor& want) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    num = std::max(num, double(std::fabs(got.at(int64_t(i)) - want.at(int64_t(i)))));
    den = std::max(den, double(std::fabs(want.at(int64_t(i)))));
  }
  return num / std::max(den, 1e-30);
}

class TrainGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    meta = json::parse(xv::read_file(kDir + "/trace.json"));
    xv::LoraConfig cfg;
    cfg.r = meta["r"].get<int64_t>();
    cfg.alpha = meta["alpha"].get<float>();
    cfg.targets = meta["targets"].get<std::vector<std::string>>();
    model = xv::KdModel::load(kFix + "/models/tiny_bert", "lora", cfg, 0);
    load_trainable(*model, kDir + "/lora_init.safetensors");
    for (const auto& p : json::parse(xv::read_file(kDir + "/pairs.json")))
      pairs.push_back({p[0].get<std::string>(), p[1].get<std::string>(), "", ""});
  }
  std::vector<xv::TrainPair> batch(int64_t step) const {
    const int64_t bs = meta["batch"].get<int64_t>();
    std::vector<xv::TrainPair> b;
    for (int64_t i = 0; i < bs; ++i) b.push_back(pairs[size_t((step * bs + i) % int64_t(pairs.size()))]);
    return b;
  }
  json meta;
  std::unique_ptr<xv::KdModel> model;
  std::vector<xv::TrainPair> pairs;
};

TEST_F(TrainGolden, LoraTargetsMatchPeft) {
  auto ws = xv::WeightStore::open_file(kDir + "/lora_init.safetensors");
  auto t = model->trainable();
  EXPECT_EQ(ws.names().size(), t.size());  // every PEFT adapter tensor has its twin here
  for (const auto& x : t) EXPECT_TRUE(ws.has(x.name)) << x.name;
}

TEST_F(TrainGolden, FirstStepLossAndGradients) {
  model->zero_grad();
  auto terms = model->forward_backward(batch(0), {});
  const auto& t1 = meta["trace"][0];
  EXPECT_NEAR(terms.loss, t1["loss"].get<double>(), 1e-5 * t1["loss"].get<double>());
  EXPECT_NEAR(terms.loss_en, t1["loss_en"].get<double>(), 1e-5 * t1["loss_en"].get<double>());
  EXPECT_NEAR(terms.loss_xx, t1["loss_xx"].get<double>(), 1e-5 * t1["loss_xx"].get<double>());
  auto g = xv::WeightStore::open_file(kDir + "/grads_step1.safetensors");
  double worst = 0;
  for (const auto& t : model->trainable()) {
    const double e = rel_err(*t.grad, g.get(t.name, t.grad->shape()));
    EXPECT_LE(e, 1e-4) << t.name;
    worst = std::max(worst, e);
  }
  std::printf("step 1: loss %.8f (reference %.8f), worst LoRA gradient error %.2e\n", terms.loss,
              t1["loss"].get<double>(), worst);
}

// The trainer's optimizer (parallel/fsdp.h TrainableShards on one process: global-norm clipping and AdamW
// through the op set) against torch.nn.utils.clip_grad_norm_ + torch.optim.AdamW.
TEST_F(TrainGolden, TenAdamWStepsFollowTheReference) {
  xv::ops::AdamWParams oc;
  oc.lr = meta["lr"].get<float>();
  oc.beta1 = meta["betas"][0].get<float>();
  oc.beta2 = meta["betas"][1].get<float>();
  oc.eps = meta["eps"].get<float>();
  oc.weight_decay = meta["weight_decay"].get<float>();
  auto comm = xv::par::make_self_communicator();
  xv::par::TrainableOptions to;
  to.world = comm.get();
  xv::par::TrainableShards opt(model->trainable(), oc, to);
  const int64_t steps = meta["steps"].get<int64_t>(), warmup = meta["warmup"].get<int64_t>();
  for (int64_t s = 0; s < steps; ++s) {
    model->zero_grad();
    auto terms = model->forward_backward(batch(s), {});
    const double lr = oc.lr * xv::lr_lambda(meta["schedule"].get<std::string>(), s, warmup, steps);
    const double norm = opt.step(float(lr), meta["clip"].get<double>());
    const auto& ref = meta["trace"][size_t(s)];
    EXPECT_NEAR(terms.loss, ref["loss"].get<double>(), 1e-4 * ref["loss"].get<double>()) << "step " << s + 1;
    EXPECT_NEAR(norm, ref["grad_norm"].get<double>(), 1e-4 * ref["grad_norm"].get<double>()) << "step " << s + 1;
    EXPECT_NEAR(lr, ref["lr"].get<double>(), 1e-6 * ref["lr"].get<double>()) << "step " << s + 1;  // f32 base lr
  }
  auto fin = xv::WeightStore::open_file(kDir + "/lora_final.safetensors");
  double worst = 0;
  for (const auto& t : model->trainable()) worst = std::max(worst, rel_err(*t.value, fin.get(t.name, t.value->shape())));
  EXPECT_LE(worst, 1e-4);
  std::printf("after %lld AdamW steps: worst adapter error %.2e\n", static_cast<long long>(steps), worst);
}

}  // namespace
