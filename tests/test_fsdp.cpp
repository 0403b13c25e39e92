// parallel/fsdp.h on one rank (the self communicator): the units round-trip, and the flat sharded optimizer step
// equals AdamW + clip_grad_norm of train/schedule.h (checked against torch in test_train_golden). More ranks:
// tests/mpi_train_test.sh.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "train/schedule.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"

namespace {

xv::Tensor random_tensor(xv::Shape s, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  xv::Tensor t(std::move(s));
  for (float& v : t.data) v = d(rng);
  return t;
}

}  // namespace

TEST(FrozenShards, UnitsRoundTripAndAreFreedBetweenUses) {
  std::mt19937 rng(1);
  xv::Tensor a = random_tensor({3, 5}, rng), b = random_tensor({7}, rng), c = random_tensor({2, 2}, rng);
  const xv::Tensor a0 = a, b0 = b, c0 = c;
  auto comm = xv::par::make_self_communicator();
  xv::par::FrozenShards fs(*comm, {{"u0", {&a, &b}}, {"u1", {&c}}}, true);
  EXPECT_TRUE(a.data.empty() && b.data.empty() && c.data.empty());  // held as shards only
  EXPECT_EQ(a.shape, a0.shape);
  EXPECT_EQ(fs.resident_bytes(), int64_t((15 + 7 + 4) * sizeof(float)));
  fs.acquire(0, 1);  // starts u1's gather too
  EXPECT_EQ(a.data, a0.data);
  EXPECT_EQ(b.data, b0.data);
  fs.release(0);
  EXPECT_TRUE(a.data.empty());
  fs.acquire(1, -1);
  EXPECT_EQ(c.data, c0.data);
  fs.release(1);
  EXPECT_EQ(fs.gathers(), 2);
  EXPECT_GE(fs.peak_gathered_bytes(), int64_t((15 + 7 + 4) * sizeof(float)));  // u0 held while u1 came
  EXPECT_THROW(fs.acquire(2, -1), xv::Error);
}

// Without clipping, the flat step is AdamW::step bit for bit; with clipping, the chunked norm agrees with
// clip_grad_norm to double rounding.
TEST(TrainableShards, OneRankStepIsAdamW) {
  for (double max_norm : {0.0, 0.5}) {
    std::mt19937 rng(2);
    xv::Tensor p1 = random_tensor({40, 300}, rng), p2 = random_tensor({9000}, rng);
    xv::Tensor g1 = random_tensor({40, 300}, rng, 0.1f), g2 = random_tensor({9000}, rng, 0.1f);
    xv::Tensor q1 = p1, q2 = p2, h1 = g1, h2 = g2;
    xv::AdamWConfig cfg;
    cfg.lr = 1e-3f, cfg.weight_decay = 0.01f;
    auto comm = xv::par::make_self_communicator();
    xv::par::TrainableOptions o;
    o.world = comm.get();
    xv::par::TrainableShards ts({{"p1", &p1, &g1}, {"p2", &p2, &g2}}, cfg, o);
    xv::AdamW ref({{&q1, &h1}, {&q2, &h2}}, cfg);
    for (int step = 0; step < 3; ++step) {
      const double n_ts = ts.step(1e-3f, max_norm);
      const double n_ref = xv::clip_grad_norm({&h1, &h2}, max_norm);
      ref.step(1e-3f);
      EXPECT_NEAR(n_ts, n_ref, 1e-12 * n_ref);
      if (max_norm == 0.0) {
        EXPECT_EQ(p1.data, q1.data) << "step " << step;
        EXPECT_EQ(p2.data, q2.data) << "step " << step;
      } else {
        for (size_t i = 0; i < p1.data.size(); ++i) ASSERT_NEAR(p1.data[i], q1.data[i], 1e-6f);
        for (size_t i = 0; i < p2.data.size(); ++i) ASSERT_NEAR(p2.data[i], q2.data[i], 1e-6f);
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
  xv::AdamWConfig cfg;
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
  for (size_t i = 0; i < sum.data.size(); ++i) sum.data[i] = (0.0f + m0.data[i]) + m1.data[i];
  xv::AdamW ref({{&q, &sum}}, cfg);
  ref.step(1e-2f);
  EXPECT_EQ(p.data, q.data);
  EXPECT_THROW(ts.take_micro_batch(2), xv::Error);
}
