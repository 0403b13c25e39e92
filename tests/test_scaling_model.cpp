// The scaling model (benchmarks/scaling/scaling_model.h): parameter counts against the shapes, the
// communication accounting and the alpha-beta times on hand-computed cases, and the invariants the plots
// rely on. scaling_model.cpp is compiled into this test by benchmarks/scaling/CMakeLists.txt.
#include <gtest/gtest.h>

#include "benchmarks/scaling/scaling_model.h"

using namespace xv::scaling;

namespace {

const Unit& unit(const ModelDesc& m, const std::string& name) {
  for (const Unit& u : m.units)
    if (u.name == name) return u;
  throw std::runtime_error("no unit " + name);
}

}  // namespace

TEST(ScalingModel, Phi35VisionParameterCounts) {
  const Workload w;  // r = 8, 8 CLIP layers per unit
  const ModelDesc m = phi35v_model(w);
  // Decoder layer: qkv 3*3072*3072 + o 3072*3072 + gate_up 2*8192*3072 + down 3072*8192 + 2 RMSNorms of 3072.
  const double dec = 28311552.0 + 9437184.0 + 50331648.0 + 25165824.0 + 6144.0;
  EXPECT_EQ(dec, 113252352.0);
  EXPECT_EQ(unit(m, "decoder.0").base_params, dec);
  EXPECT_EQ(unit(m, "decoder.31").base_params, dec + 3072);  // + model.norm
  EXPECT_EQ(unit(m, "embeddings").base_params, 32064.0 * 3072);
  // Projector: 4096*3072 + 3072 (bias) + 3072*3072 + 3072 + glb_GN + sub_GN (4096 each).
  EXPECT_EQ(unit(m, "projector").base_params, 12582912.0 + 3072 + 9437184.0 + 3072 + 8192);
  // CLIP layer: q, k, v, out (1024*1024 + 1024 each), 2 LayerNorms (2*1024 each), fc1 (4096*1024 + 4096),
  // fc2 (1024*4096 + 1024).
  const double clip = 4 * (1048576.0 + 1024) + 4096 + (4194304.0 + 4096) + (4194304.0 + 1024);
  EXPECT_EQ(clip, 12596224.0);
  // Group 0 holds the CLIP embeddings: patch conv 1024*3*14*14, class 1024, positions 577*1024, pre-LN 2*1024.
  const double clip_embed = 602112.0 + 1024 + 590848.0 + 2048;
  EXPECT_EQ(unit(m, "clip.0-7").base_params, 8 * clip + clip_embed);
  EXPECT_EQ(unit(m, "clip.16-22").base_params, 7 * clip);  // 23 layers run: 8 + 8 + 7
  EXPECT_EQ(m.units.size(), 3u + 1 + 1 + 32);
  const double loaded = 32 * dec + 3072 + 32064.0 * 3072 + 22034432.0 + 23 * clip + clip_embed;
  EXPECT_EQ(m.loaded_params, loaded);
  // The checkpoint adds lm_head, the 24th CLIP layer and post_layernorm: Phi-3.5-vision's ~4.15B.
  EXPECT_EQ(m.checkpoint_params, loaded + 32064.0 * 3072 + clip + 2048);
  EXPECT_NEAR(m.checkpoint_params / 1e9, 4.15, 0.01);
  // LoRA r = 8, r (in + out) per Linear: qkv 8*(3072+9216), o 8*(3072+3072), gate_up 8*(3072+16384),
  // down 8*(8192+3072); CLIP q, k, v, out 8*(1024+1024) each.
  const double dec_lora = 98304.0 + 49152.0 + 155648.0 + 90112.0;
  EXPECT_EQ(unit(m, "decoder.5").lora_params, dec_lora);
  EXPECT_EQ(m.trainable_params, 32 * dec_lora + 23 * 4 * 16384.0);
}

TEST(ScalingModel, BertParameterCounts) {
  BertShape s;
  s.vocab_size = 1200, s.hidden_size = 64, s.intermediate_size = 128, s.num_hidden_layers = 2;
  s.max_position_embeddings = 128, s.type_vocab_size = 2;
  Workload w;
  w.lora_rank = 4, w.text_tokens = 16, w.image_tokens = 0;
  const ModelDesc m = bert_model(s, w);
  ASSERT_EQ(m.units.size(), 3u);
  EXPECT_EQ(m.units[0].base_params, 1200.0 * 64 + 128 * 64 + 2 * 64 + 2 * 64);
  EXPECT_EQ(m.units[1].base_params, 4 * (64.0 * 64 + 64) + 4 * 64 + (64 * 128 + 128) + (128 * 64 + 64));
  // query, key, value: 4*(64+64) each; dense: attention output 4*(64+64), intermediate 4*(64+128), output 4*(128+64).
  EXPECT_EQ(m.units[1].lora_params, 3 * 512.0 + 512 + 768 + 768);
  s.lora_targets = {"query", "nonsense"};
  EXPECT_THROW(bert_model(s, w), std::invalid_argument);
}

TEST(ScalingModel, CollectiveBytesByHand) {
  // 10 elements of 2 bytes over 4 ranks: padded to 12, shards of 3; a rank receives the 3 other shards.
  EXPECT_EQ(all_gather_bytes(10, 2, 4), 18.0);
  EXPECT_EQ(reduce_scatter_bytes(10, 2, 4), 18.0);
  EXPECT_EQ(all_reduce_bytes(10, 4, 4), 60.0);  // 2 * 3/4 * 40
  EXPECT_EQ(all_gather_bytes(10, 2, 1), 0.0);
  EXPECT_EQ(all_reduce_bytes(10, 4, 1), 0.0);
}

// A two-layer model whose step is worked out by hand: unit E (10 elements, forward only), L0 and L1
// (6 elements each, forward and backward), 5 trainable elements, no chunk padding.
ModelDesc tiny_model() {
  ModelDesc m;
  m.base_bytes_per_param = 2;
  m.trainable_bytes_per_param = 4;
  m.trainable_chunk = 1;
  Unit e;
  e.name = e.kind = "emb";
  e.base_params = 10;
  e.teacher_fwd = 1, e.student_fwd = 2;
  m.units.push_back(e);
  for (int l = 0; l < 2; ++l) {
    Unit u;
    u.name = "layer." + std::to_string(l);
    u.kind = "layer";
    u.base_params = 6;
    u.lora_params = l == 0 ? 5 : 0;
    u.teacher_fwd = 1, u.student_fwd = 2, u.student_bwd = 2;
    m.units.push_back(u);
  }
  m.trainable_params = 5;
  m.loaded_params = 22;
  return m;
}

TEST(ScalingModel, BytesReceivedPerStepByHand) {
  ModelDesc m = tiny_model();
  Workload w;
  w.grad_accum = 2;
  const Hardware hw;
  // full on 4 ranks, per micro-batch: forward gathers E (3 * 3 * 2 = 18), L0 and L1 (3 * 2 * 2 = 12 each);
  // backward: L1 kept from forward, L0 gathered again (12), E not needed: 54 per micro-batch, 108 for two.
  // Trainable, padded to P = 8: reduce-scatter 3 * 2 * 4 = 24; the norm's f64 sums, 2 chunks per rank, all-
  // gathered: 3 * 2 * 8 = 48; the parameters all-gathered: 3 * 2 * 4 = 24.
  const StepPrediction f = predict_step(m, w, hw, Strategy::full, 4);
  EXPECT_EQ(f.frozen_bytes, 108.0);
  EXPECT_EQ(f.grad_bytes, 24.0);
  EXPECT_EQ(f.param_bytes, 48.0 + 24);
  EXPECT_EQ(f.bytes_received, 108.0 + 24 + 72);
  // grad_op: only the trainable buffer; none: all-reduce of P = 8, 2 * 3/4 * 8 * 4 = 48, nothing else.
  EXPECT_EQ(predict_step(m, w, hw, Strategy::grad_op, 4).bytes_received, 24.0 + 72);
  EXPECT_EQ(predict_step(m, w, hw, Strategy::none, 4).bytes_received, 48.0);
  // hybrid on 16 ranks, 8 per node: gathers within the node (7 * 2 * 2 = 28 for E, 7 * 1 * 2 = 14 for a
  // layer: 70 per micro-batch). P = 16: reduce-scatter in the node 7 * 2 * 4 = 56, the node's shard (2)
  // all-reduced over 2 nodes 2 * 1/2 * 2 * 4 = 8, norm sums 7 * 2 * 8 = 112, parameters 7 * 2 * 4 = 56.
  const StepPrediction h = predict_step(m, w, hw, Strategy::hybrid, 16);
  EXPECT_EQ(h.shard_group, 8);
  EXPECT_EQ(h.frozen_bytes, 140.0);
  EXPECT_EQ(h.grad_bytes, 56.0 + 8);
  EXPECT_EQ(h.param_bytes, 112.0 + 56);
  EXPECT_THROW(predict_step(m, w, hw, Strategy::hybrid, 12), std::invalid_argument);
  // Deterministic full on 4 ranks: all-to-all of both micro-batches' world shards (3 * 2 * 2 * 4 = 48), the
  // norm over world shards (48) and the parameters (24).
  Workload d = w;
  d.deterministic = true;
  const StepPrediction fd = predict_step(m, d, hw, Strategy::full, 4);
  EXPECT_EQ(fd.grad_bytes, 48.0);
  EXPECT_EQ(fd.param_bytes, 48.0 + 24);
  // The norm chunk pads the buffer to a multiple of ranks x chunk: chunk 2 on 4 ranks, P = 8 still, one
  // f64 sum per rank (3 * 1 * 8 = 24).
  m.trainable_chunk = 2;
  EXPECT_EQ(predict_step(m, w, hw, Strategy::full, 4).param_bytes, 24.0 + 24);
  m.trainable_chunk = 4;  // P = 16: reduce-scatter 3 * 4 * 4 = 48
  EXPECT_EQ(predict_step(m, w, hw, Strategy::full, 4).grad_bytes, 48.0);
}

TEST(ScalingModel, AlphaBetaTimeByHand) {
  const Link l{10e-6, 100e9};
  // 4 ranks, 1 GB: 3 steps of 10 us + 3/4 of 1 GB at 100 GB/s.
  EXPECT_DOUBLE_EQ(ring_time(4, 1e9, l), 3 * 10e-6 + 0.75 * 1e9 / 100e9);
  EXPECT_DOUBLE_EQ(all_reduce_time(4, 1e9, l), 2 * (3 * 10e-6 + 0.75 * 1e9 / 100e9));
  EXPECT_EQ(ring_time(1, 1e9, l), 0.0);
  Hardware hw;  // 8 GPUs per node
  EXPECT_EQ(ring_link(hw, 8, false).bw_Bps, hw.intra_bw_GBps * 1e9);
  EXPECT_EQ(ring_link(hw, 16, false).bw_Bps, hw.inter_bw_GBps * 1e9);  // the ring crosses nodes
  EXPECT_EQ(ring_link(hw, 16, false).alpha_s, hw.inter_alpha_us * 1e-6);
  EXPECT_EQ(ring_link(hw, 2, true).bw_Bps, hw.inter_bw_GBps * 1e9);
}

TEST(ScalingModel, ExposedCommunicationByHand) {
  // Two layers of 1e9 bf16 elements on 2 ranks, 1 GB/s, no latency: each gather takes 1/2 * 2e9 / 1e9 = 1 s.
  ModelDesc m;
  for (int l = 0; l < 2; ++l) {
    Unit u;
    u.name = "layer." + std::to_string(l);
    u.kind = "layer";
    u.base_params = 1e9;
    u.teacher_fwd = 1, u.student_fwd = 1, u.student_bwd = 1;
    m.units.push_back(u);
  }
  Hardware hw;
  hw.intra_alpha_us = 0, hw.intra_bw_GBps = 1;
  MeasuredUnits meas;
  meas.units["layer"] = MeasuredTime{0.25, NAN, 0.5};  // forward per micro-batch 0.5 s, backward 0.5 s
  Workload w;
  w.grad_accum = 1;
  w.checkpointing = false;
  // Chain: L0 fwd (gather 1, compute 0.5), L1 fwd (1, 0.5), L1 bwd (kept: 0, 0.5), L0 bwd (1, 0.5). L0's
  // backward gather starts with L1's forward (L1 is kept: no acquire in between), so it hides behind 1 s.
  // Exposed: 1 + (1 - 0.5) + 0 + (1 - 1) = 1.5 of 3 s.
  const StepPrediction p = predict_step(m, w, hw, Strategy::full, 2, &meas, true);
  EXPECT_DOUBLE_EQ(p.compute_s, 2.0);
  EXPECT_DOUBLE_EQ(p.gather_s, 3.0);
  EXPECT_DOUBLE_EQ(p.gather_exposed_s, 1.5);
  EXPECT_DOUBLE_EQ(p.hidden_fraction, 0.5);
  EXPECT_DOUBLE_EQ(p.step_s, 3.5);
  // Two micro-batches: the second one's first gather is exposed again (no prefetch across the boundary).
  w.grad_accum = 2;
  EXPECT_DOUBLE_EQ(predict_step(m, w, hw, Strategy::full, 2, &meas, true).gather_exposed_s, 3.0);
  w.grad_accum = 1;
  // Two buffers of 2 GB in flight.
  EXPECT_DOUBLE_EQ(p.memory.gathered, 4e9);
  hw.overlap = false;
  EXPECT_DOUBLE_EQ(predict_step(m, w, hw, Strategy::full, 2, &meas, true).step_s, 5.0);
  hw.overlap = true;
  // Checkpointing adds one student forward per layer to backward.
  w.checkpointing = true;
  for (Unit& u : m.units) u.recompute = true;
  EXPECT_DOUBLE_EQ(predict_step(m, w, hw, Strategy::full, 2, &meas, true).compute_s, 2.5);
  // A unit missing from the table is an error when the table is required.
  meas.units.clear();
  m.units[0].linear_flops = 1;
  EXPECT_THROW(predict_step(m, w, hw, Strategy::full, 2, &meas, true), std::invalid_argument);
}

TEST(ScalingModel, SweepInvariants) {
  const Workload w;
  const Hardware hw;
  const ModelDesc m = phi35v_model(w);
  std::vector<int64_t> ns;
  for (int64_t n = 1; n <= 1024; n *= 2) ns.push_back(n);
  const std::vector<StepPrediction> ps = sweep(m, w, hw, ns);
  ASSERT_EQ(ps.size(), ns.size() * 4);
  double step1 = 0;
  double prev_full = INFINITY, none_mem = NAN;
  for (const StepPrediction& p : ps) {
    if (p.ranks == 1) {
      EXPECT_DOUBLE_EQ(p.efficiency, 1.0) << strategy_name(p.strategy);
      // One rank: no communication, and every strategy is the same run.
      EXPECT_EQ(p.comm_s, 0.0);
      if (step1 == 0) step1 = p.step_s;
      EXPECT_DOUBLE_EQ(p.step_s, step1);
    }
    EXPECT_GT(p.efficiency, 0.0);
    EXPECT_LE(p.efficiency, 1.0 + 1e-12);
    if (p.strategy == Strategy::full) {
      EXPECT_LT(p.memory.total(), prev_full) << p.ranks << " ranks";
      prev_full = p.memory.total();
    }
    if (p.strategy == Strategy::none) {
      if (std::isnan(none_mem)) none_mem = p.memory.total();
      EXPECT_DOUBLE_EQ(p.memory.total(), none_mem) << p.ranks << " ranks";
    }
  }
  // full on 8 GPUs: an eighth of the bf16 base, two gathered decoder layers (the last holds model.norm too).
  const StepPrediction f8 = predict_step(m, w, hw, Strategy::full, 8);
  EXPECT_NEAR(f8.memory.base, m.loaded_params * 2 / 8, 37 * 8 * 2);  // each unit padded to a multiple of 8
  EXPECT_DOUBLE_EQ(f8.memory.gathered, (2 * 113252352.0 + 3072) * 2);
  const StepPrediction n8 = predict_step(m, w, hw, Strategy::none, 8);
  EXPECT_EQ(n8.memory.activations, f8.memory.activations);
  EXPECT_GT(n8.memory.total(), f8.memory.total());
  // Checkpointing keeps far less.
  Workload no_ckpt = w;
  no_ckpt.checkpointing = false;
  EXPECT_GT(predict_step(phi35v_model(no_ckpt), no_ckpt, hw, Strategy::full, 8).memory.activations,
            4 * f8.memory.activations);
}

TEST(ScalingModel, MedianStepTime) {
  // The first line is skipped; 20 pairs per step at 10, 20 and 40 pairs/s: 2, 1 and 0.5 s.
  EXPECT_DOUBLE_EQ(median_step_time({100, 10, 20, 40}, 20), 1.0);
  EXPECT_DOUBLE_EQ(median_step_time({100, 10, 20, 0, 40, 40}, 20), 0.75);  // 0 ignored; even count: mean
  EXPECT_TRUE(std::isnan(median_step_time({100}, 20)));
}

// fit_link recovers alpha and B from timings that follow the ring formula exactly (sizes 4 KiB .. 16 MiB, 2 and
// 3 ranks), stays close under +-5% noise, and refuses samples that cannot separate the two.
TEST(ScalingModel, FitLinkRecoversAlphaAndBandwidth) {
  const Link truth{12e-6, 3.5e9};
  std::vector<CommSample> exact, noisy;
  int k = 0;
  for (int64_t p : {2, 3})
    for (double bytes = 4096; bytes <= 16.0 * 1048576; bytes *= 4) {
      const double t = ring_time(p, bytes, truth);
      exact.push_back({p, bytes, t});
      noisy.push_back({p, bytes, t * (k++ % 2 ? 1.05 : 0.95)});
    }
  double rms = 1;
  const Link l = fit_link(exact, &rms);
  EXPECT_NEAR(l.alpha_s, truth.alpha_s, 1e-9);
  EXPECT_NEAR(l.bw_Bps, truth.bw_Bps, 1e-3 * truth.bw_Bps);
  EXPECT_LT(rms, 1e-9);
  const Link n = fit_link(noisy, &rms);
  EXPECT_NEAR(n.alpha_s, truth.alpha_s, 0.1 * truth.alpha_s);
  EXPECT_NEAR(n.bw_Bps, truth.bw_Bps, 0.1 * truth.bw_Bps);
  EXPECT_NEAR(rms, 0.05, 0.01);
  EXPECT_THROW(fit_link({{2, 4096, 1e-5}}), std::invalid_argument);                       // one sample
  EXPECT_THROW(fit_link({{2, 4096, 1e-5}, {2, 4096, 1.1e-5}}), std::invalid_argument);  // one size, one p
  EXPECT_THROW(fit_link({{2, 4096, 1e-3}, {2, 1048576, 1e-5}}), std::invalid_argument);  // bigger is faster
  // Pure bandwidth with timings slightly under it at the small end: alpha clamps to 0, B fits alone.
  const Link z = fit_link({{2, 1e6, 0.9 * 0.5e6 / 1e9}, {2, 1e8, 0.5e8 / 1e9}});
  EXPECT_EQ(z.alpha_s, 0.0);
  EXPECT_GT(z.bw_Bps, 1e9);
  EXPECT_LT(z.bw_Bps, 1.1e9);
}
