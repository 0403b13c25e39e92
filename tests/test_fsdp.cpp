// parallel/fsdp.h on one rank (the self communicator): the units round-trip (f32, and bf16 widened on the CPU),
// and the flat sharded optimizer step equals AdamW applied tensor by tensor after a global-norm clip written
// here (the step is checked against torch in test_train_golden). More ranks: tests/mpi_train_test.sh.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/ops.h"
#include "tests/tensor_values.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"

namespace {

xv::Tensor random_tensor(xv::Shape s, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  xv::Tensor t(std::move(s));
  xv::test::fill_each(t, [&](size_t) { return d(rng); });
  return t;
}

// AdamW tensor by tensor (the op on each whole tensor) after clipping to max_norm by the global L2 norm summed
// in f64 tensor by tensor (as torch.nn.utils.clip_grad_norm_): the reference the flat, chunked step must meet.
struct ReferenceAdamW {
  std::vector<std::pair<xv::Tensor*, xv::Tensor*>> pg;  // parameter, gradient
  std::vector<xv::Tensor> m, v;
  xv::ops::AdamWParams cfg;
  int64_t t = 0;
  ReferenceAdamW(std::vector<std::pair<xv::Tensor*, xv::Tensor*>> p, xv::ops::AdamWParams c) : pg(std::move(p)), cfg(c) {
    for (auto& [w, g] : pg) m.push_back(w->zeros_like()), v.push_back(w->zeros_like());
  }
  double step(float lr, double max_norm) {
    double ss = 0;
    for (auto& [w, g] : pg)
      for (float x : g->to_vector()) ss += double(x) * x;
    const double norm = std::sqrt(ss);
    if (max_norm > 0)
      for (auto& [w, g] : pg) xv::ops::scale(*g, float(std::min(1.0, max_norm / (norm + 1e-6))));
    ++t;
    for (size_t i = 0; i < pg.size(); ++i) xv::ops::adamw_update(*pg[i].first, *pg[i].second, m[i], v[i], lr, t, cfg);
    return norm;
  }
};

}  // namespace

TEST(FrozenShards, UnitsRoundTripAndAreFreedBetweenUses) {
  std::mt19937 rng(1);
  xv::Tensor a = random_tensor({3, 5}, rng), b = random_tensor({7}, rng), c = random_tensor({2, 2}, rng);
  const xv::Tensor a0 = a, b0 = b, c0 = c;
  auto comm = xv::par::make_self_communicator();
  xv::par::FrozenShards fs(*comm, {{"u0", {&a, &b}}, {"u1", {&c}}}, true);
  EXPECT_TRUE(a.shape_only() && b.shape_only() && c.shape_only());  // held as shards only
  EXPECT_EQ(a.shape(), a0.shape());
  EXPECT_EQ(fs.resident_bytes(), int64_t((15 + 7 + 4) * sizeof(float)));
  fs.acquire(0, 1);  // starts u1's gather too
  EXPECT_EQ(a.to_vector(), a0.to_vector());
  EXPECT_EQ(b.to_vector(), b0.to_vector());
  fs.release(0);
  EXPECT_TRUE(a.shape_only());
  fs.acquire(1, -1);
  EXPECT_EQ(c.to_vector(), c0.to_vector());
  fs.release(1);
  EXPECT_EQ(fs.gathers(), 2);
  EXPECT_GE(fs.peak_gathered_bytes(), int64_t((15 + 7 + 4) * sizeof(float)));  // u0 held while u1 came
  EXPECT_THROW(fs.acquire(2, -1), xv::Error);
}

// Without clipping, the flat step is AdamW tensor by tensor bit for bit; with clipping, the chunked norm agrees
// with the global norm to double rounding.
TEST(TrainableShards, OneRankStepIsAdamW) {
  for (double max_norm : {0.0, 0.5}) {
    std::mt19937 rng(2);
    xv::Tensor p1 = random_tensor({40, 300}, rng), p2 = random_tensor({9000}, rng);
    xv::Tensor g1 = random_tensor({40, 300}, rng, 0.1f), g2 = random_tensor({9000}, rng, 0.1f);
    xv::Tensor q1 = p1, q2 = p2, h1 = g1, h2 = g2;
    xv::ops::AdamWParams cfg;
    cfg.lr = 1e-3f, cfg.weight_decay = 0.01f;
    auto comm = xv::par::make_self_communicator();
    xv::par::TrainableOptions o;
    o.world = comm.get();
    xv::par::TrainableShards ts({{"p1", &p1, &g1}, {"p2", &p2, &g2}}, cfg, o);
    ReferenceAdamW ref({{&q1, &h1}, {&q2, &h2}}, cfg);
    for (int step = 0; step < 3; ++step) {
      const double n_ts = ts.step(1e-3f, max_norm);
      const double n_ref = ref.step(1e-3f, max_norm);
      EXPECT_NEAR(n_ts, n_ref, 1e-12 * n_ref);
      if (max_norm == 0.0) {
        EXPECT_EQ(p1.to_vector(), q1.to_vector()) << "step " << step;
        EXPECT_EQ(p2.to_vector(), q2.to_vector()) << "step " << step;
      } else {
        for (int64_t i = 0; i < p1.numel(); ++i) ASSERT_NEAR(p1.at(i), q1.at(i), 1e-6f);
        for (int64_t i = 0; i < p2.numel(); ++i) ASSERT_NEAR(p2.at(i), q2.at(i), 1e-6f);
      }
      // The same gradients again next step (the clip above scaled h1, h2 in place).
      h1 = g1, h2 = g2;
    }
    EXPECT_EQ(ts.adamw_steps(), 3);
  }
}

// Deterministic mode sums the micro-batches' gradients from zero, in order.
TEST(TrainableShards, DeterministicModeSumsMicroBatchesInOrder) {
  std::mt19937 rng(3);
  xv::Tensor p = random_tensor({5000}, rng), g = random_tensor({5000}, rng, 0.1f);
  xv::Tensor q = p;
  const xv::Tensor m0 = random_tensor({5000}, rng, 0.1f), m1 = random_tensor({5000}, rng, 0.1f);
  xv::ops::AdamWParams cfg;
  auto comm = xv::par::make_self_communicator();
  xv::par::TrainableOptions o;
  o.world = comm.get();
  o.deterministic = true;
  o.grad_accum = 2;
  xv::par::TrainableShards ts({{"p", &p, &g}}, cfg, o);
  g = m0;
  ts.take_micro_batch(0);
  g = m1;
  ts.take_micro_batch(1);
  g = xv::Tensor({5000});  // what the model holds now no longer matters
  ts.step(1e-2f, 0.0);
  xv::Tensor sum({5000});
  for (int64_t i = 0; i < sum.numel(); ++i) sum.set(i, (0.0f + m0.at(i)) + m1.at(i));
  ReferenceAdamW ref({{&q, &sum}}, cfg);
  ref.step(1e-2f, 0.0);
  EXPECT_EQ(p.to_vector(), q.to_vector());
  EXPECT_THROW(ts.take_micro_batch(2), xv::Error);
}

// A bf16 unit: the shard is kept in bf16 (half the bytes), the gathered unit is widened to f32 on the CPU for
// the model (exactly the stored values), and released to its bf16 layout again.
TEST(FrozenShards, Bf16UnitsAreKeptHalfAndWidenedOnAcquire) {
  std::mt19937 rng(4);
  xv::Tensor a = random_tensor({3, 5}, rng).to_dtype(xv::DType::BF16), b = random_tensor({7}, rng).to_dtype(xv::DType::BF16);
  const std::vector<float> a0 = a.to_vector(), b0 = b.to_vector();
  auto comm = xv::par::make_self_communicator();
  xv::par::FrozenShards fs(*comm, {{"u", {&a, &b}}}, false);
  EXPECT_EQ(fs.resident_bytes(), int64_t((15 + 7) * 2));
  EXPECT_TRUE(a.shape_only());
  EXPECT_EQ(a.dtype(), xv::DType::BF16);
  fs.acquire(0, -1);
  EXPECT_EQ(a.dtype(), xv::DType::F32);
  EXPECT_EQ(a.to_vector(), a0);
  EXPECT_EQ(b.to_vector(), b0);
  fs.release(0);
  EXPECT_TRUE(a.shape_only());
  EXPECT_EQ(a.dtype(), xv::DType::BF16);
}

// Tensors of one unit must share a dtype, and the communicator must move their memory.
TEST(FrozenShards, RefusesMixedUnits) {
  xv::Tensor a({4}), b = xv::Tensor({4}).to_dtype(xv::DType::BF16);
  auto comm = xv::par::make_self_communicator();
  EXPECT_THROW(xv::par::FrozenShards(*comm, {{"u", {&a, &b}}}, false), xv::Error);
}
