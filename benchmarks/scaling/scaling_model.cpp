// The cost model (scaling_model.h); docs/scaling.md writes out every formula used here.
#include "benchmarks/scaling/scaling_model.h"

#include <algorithm>
#include <stdexcept>

namespace xv::scaling {

const char* strategy_name(Strategy s) {
  switch (s) {
    case Strategy::full: return "full";
    case Strategy::grad_op: return "grad_op";
    case Strategy::none: return "none";
    case Strategy::hybrid: return "hybrid";
  }
  return "?";
}

Strategy parse_strategy(const std::string& s) {
  for (const Strategy t : kStrategies)
    if (s == strategy_name(t)) return t;
  throw std::invalid_argument("unknown strategy '" + s + "' (expected full, grad_op, none or hybrid)");
}

namespace {

double ceil_div(double a, int64_t b) { return std::ceil(a / double(b)); }

// A stack of `layers` transformer layers as one unit.
Unit layer_unit(std::string name, std::string kind, int64_t layers) {
  Unit u;
  u.name = std::move(name);
  u.kind = std::move(kind);
  u.layers = layers;
  return u;
}

void finish(ModelDesc& m) {
  m.trainable_params = m.loaded_params = 0;
  for (const Unit& u : m.units) m.trainable_params += u.lora_params, m.loaded_params += u.base_params;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Phi-3.5-vision. Shapes from its config.json (decoder) and CLIP ViT-L/14-336 (vision tower); the trainer's
// layout from models/phi3v.h and models/clip_vision.h.
ModelDesc phi35v_model(const Workload& w) {
  // Phi-3 decoder: vocab V, hidden C, MLP I, L layers; no biases; two RMSNorms per layer.
  const double V = 32064, C = 3072, I = 8192;
  const int64_t L = 32;
  // CLIP ViT-L/14-336: hidden Cv, MLP Iv, patch P, 24x24 patches + CLS = 577 positions, 24 layers of which
  // the features (hidden state -2) need the first 23; biases everywhere; two LayerNorms per layer.
  const double Cv = 1024, Iv = 4096, P = 14, patches = 576, Tv = 577;
  const int64_t Lv = 24, Lv_run = 23;
  const double merged = 4 * Cv;  // 2x2 patch merge: 4096 channels into the projector
  const double r = double(w.lora_rank), B = double(w.pairs_per_rank), act = 2;  // bf16 activations
  const bool images = w.image_tokens > 0;
  const double T = double(w.text_tokens + w.image_tokens);  // decoder positions per side
  if (w.pairs_per_rank < 1 || w.grad_accum < 1 || w.lora_rank < 0 || w.clip_layers_per_unit < 1 || T < 1 ||
      w.crops < 1)
    throw std::invalid_argument("phi35v workload: pairs, grad_accum, crops, clip layers per unit and tokens must be >= 1");

  ModelDesc m;
  m.name = "Phi-3.5-vision (VLM2Vec), LoRA r=" + std::to_string(w.lora_rank);
  m.base_bytes_per_param = 2;
  m.trainable_bytes_per_param = 4;

  // CLIP layer: q, k, v, out_proj (C x C + bias each), layer_norm1/2 (weight + bias), fc1 (Iv x Cv + bias),
  // fc2 (Cv x Iv + bias).
  const double clip_layer = 4 * (Cv * Cv + Cv) + 2 * 2 * Cv + (Iv * Cv + Iv) + (Cv * Iv + Cv);  // 12,596,224
  const double clip_matmul = 4 * Cv * Cv + 2 * Iv * Cv;
  const double clip_lora = r * 4 * (Cv + Cv);  // q, k, v, out_proj: r (in + out) each
  // Patch conv (Cv x 3*P*P, no bias), class embedding, positions (577 x Cv), pre_layrnorm (weight + bias).
  const double clip_embed = 3 * P * P * Cv + Cv + Tv * Cv + 2 * Cv;  // 1,196,032
  const double R = B * double(w.crops) * Tv;                         // CLIP rows per pass: every crop of B images
  for (int64_t l0 = 0; l0 < Lv_run; l0 += w.clip_layers_per_unit) {
    const int64_t n = std::min(w.clip_layers_per_unit, Lv_run - l0);
    Unit u = layer_unit("clip." + std::to_string(l0) + "-" + std::to_string(l0 + n - 1), "clip_layer", n);
    u.base_params = double(n) * clip_layer;
    u.lora_params = double(n) * clip_lora;
    u.linear_flops = 2 * double(n) * clip_matmul * R;
    u.attn_flops = double(n) * 4 * Tv * Tv * Cv * B * double(w.crops);
    u.lora_flops = 2 * u.lora_params * R;
    if (l0 == 0) {
      u.base_params += clip_embed;
      u.linear_flops += 2 * (3 * P * P * Cv) * B * double(w.crops) * patches;
    }
    // The teacher runs the tower with its adapters off; the student once (both sides share the image).
    u.teacher_fwd = images ? 1 : 0;
    u.student_fwd = images ? 1 : 0;
    u.student_bwd = images ? 1 : 0;
    u.recompute = true;
    u.act_in = R * Cv * act;
    u.act_full = R * (8 * Cv + 2 * Iv) * act;  // x_in, h1, qkv (3), att, x_mid, h2; fc1 out, activation
    m.units.push_back(u);
  }

  // Projector + separators: Linear(4096 -> 3072) - GELU - Linear(3072 -> 3072), glb_GN and sub_GN (4096
  // each). Frozen, but backward runs through it to the tower's adapters.
  {
    Unit u = layer_unit("projector", "projector", 1);
    const double tok = B * double(w.image_tokens);
    u.base_params = (merged * C + C) + (C * C + C) + 2 * merged;  // 22,034,432
    u.linear_flops = 2 * (merged * C + C * C) * tok;
    u.teacher_fwd = images ? 1 : 0;
    u.student_fwd = images ? 1 : 0;
    u.student_bwd = images ? 1 : 0;
    u.act_in = u.act_full = tok * C * act;  // the GELU input
    m.units.push_back(u);
  }

  // embed_tokens (V x C): a lookup, no FLOPs worth counting; frozen and first in the decoder, so backward
  // never needs it (the image rows' gradient goes to the projector without it).
  {
    Unit u = layer_unit("embeddings", "embeddings", 1);
    u.base_params = V * C;  // 98,500,608
    u.teacher_fwd = 1;
    u.student_fwd = 2;
    m.units.push_back(u);
  }

  // Decoder layer: qkv_proj (3C x C), o_proj (C x C), gate_up_proj (2I x C), down_proj (C x I),
  // input_layernorm and post_attention_layernorm (C each).
  const double dec_matmul = 3 * C * C + C * C + 2 * I * C + I * C;
  const double dec_layer = dec_matmul + 2 * C;  // 113,252,352
  const double dec_lora = r * ((C + 3 * C) + (C + C) + (C + 2 * I) + (I + C));
  const double tok = B * T;
  for (int64_t l = 0; l < L; ++l) {
    Unit u = layer_unit("decoder." + std::to_string(l), "decoder_layer", 1);
    u.base_params = dec_layer + (l == L - 1 ? C : 0);  // the last unit holds model.norm too
    u.lora_params = dec_lora;
    u.linear_flops = 2 * dec_matmul * tok;
    u.attn_flops = 4 * T * T * C * B;
    u.lora_flops = 2 * dec_lora * tok;
    u.teacher_fwd = 1;  // English side, adapters off
    u.student_fwd = 2;  // English and other-language sides
    u.student_bwd = 2;
    u.recompute = true;
    u.act_in = tok * C * act;
    u.act_full = tok * (8 * C + 3 * I) * act;  // x_in, h1, qkv (3), att, x_mid, h2; gate_up (2I), SwiGLU out (I)
    m.units.push_back(u);
  }

  finish(m);
  m.checkpoint_params = m.loaded_params + double(Lv - Lv_run) * clip_layer + 2 * Cv /* post_layernorm */ +
                        V * C /* lm_head */;
  m.counted =
      "Counted: embed_tokens, 32 decoder layers, model.norm (the embedding is taken after it), the projector "
      "and the separators, the CLIP embeddings and pre_layrnorm and the 23 CLIP layers that feed hidden state "
      "-2; not counted (never loaded by the embedding model): lm_head, the 24th CLIP layer, post_layernorm";
  return m;
}

// ---------------------------------------------------------------------------------------------------------
// BERT (post-LN encoder, sentence-transformers), for validation on the CPU.
ModelDesc bert_model(const BertShape& s, const Workload& w) {
  const double V = double(s.vocab_size), H = double(s.hidden_size), I = double(s.intermediate_size);
  const double r = double(w.lora_rank), B = double(w.pairs_per_rank), T = double(w.text_tokens);
  const double act = s.activation_bytes;
  if (s.vocab_size < 1 || s.hidden_size < 1 || s.intermediate_size < 1 || s.num_hidden_layers < 1 ||
      s.max_position_embeddings < 1 || s.type_vocab_size < 0)
    throw std::invalid_argument("bert shape: vocab_size, hidden_size, intermediate_size, num_hidden_layers and "
                                "max_position_embeddings must be >= 1");
  if (w.pairs_per_rank < 1 || w.grad_accum < 1 || w.text_tokens < 1 || w.lora_rank < 0)
    throw std::invalid_argument("bert workload: pairs_per_rank, grad_accum and tokens_per_side must be >= 1");
  double lora_per_layer = 0;
  for (const std::string& t : s.lora_targets) {
    if (t == "query" || t == "key" || t == "value")
      lora_per_layer += r * (H + H);
    else if (t == "dense")  // attention.output.dense, intermediate.dense, output.dense
      lora_per_layer += r * (H + H) + r * (H + I) + r * (I + H);
    else
      throw std::invalid_argument("bert lora target '" + t + "' (expected query, key, value or dense)");
  }

  ModelDesc m;
  m.name = "BERT (L=" + std::to_string(s.num_hidden_layers) + ", H=" + std::to_string(s.hidden_size) + ")";
  m.base_bytes_per_param = s.base_bytes_per_param;
  m.trainable_bytes_per_param = 4;

  Unit e = layer_unit("embeddings", "embeddings", 1);
  // word (V x H), position (P x H), token type (types x H), LayerNorm (weight + bias).
  e.base_params = V * H + double(s.max_position_embeddings) * H + double(s.type_vocab_size) * H + 2 * H;
  e.teacher_fwd = 1;
  e.student_fwd = 2;
  m.units.push_back(e);

  // Layer: query, key, value, attention.output.dense (H x H + bias), two LayerNorms, intermediate (I x H +
  // bias), output (H x I + bias).
  const double matmul = 4 * H * H + 2 * H * I;
  const double layer = 4 * (H * H + H) + 2 * 2 * H + (H * I + I) + (I * H + H);
  for (int64_t l = 0; l < s.num_hidden_layers; ++l) {
    Unit u = layer_unit("layer." + std::to_string(l), "layer", 1);
    u.base_params = layer;
    u.lora_params = lora_per_layer;
    u.linear_flops = 2 * matmul * B * T;
    u.attn_flops = 4 * T * T * H * B;
    u.lora_flops = 2 * lora_per_layer * B * T;
    u.teacher_fwd = 1;
    u.student_fwd = 2;
    u.student_bwd = 2;
    u.recompute = true;
    u.act_in = B * T * H * act;
    u.act_full = B * T * (8 * H + 2 * I) * act;
    m.units.push_back(u);
  }
  finish(m);
  m.checkpoint_params = m.loaded_params + (H * H + H);  // + the pooler, unused by mean pooling
  m.counted = "Counted: embeddings (word, position, token type, LayerNorm) and every layer; not counted: the pooler";
  return m;
}

// ---------------------------------------------------------------------------------------------------------
UnitTimes unit_times(const Unit& u, const Workload& w, const Hardware& hw, const MeasuredUnits* measured,
                     bool require_measured) {
  const double fwd_student = u.linear_flops + u.attn_flops + u.lora_flops;
  const double fwd_teacher = u.linear_flops + u.attn_flops;
  // Backward: the frozen Linear layers need only their input gradient (1x their forward); attention's
  // backward is 2x its forward; each adapter computes its input and weight gradients (2x its forward).
  const double bwd = hw.backward_linear_factor * u.linear_flops + hw.backward_attention_factor * u.attn_flops +
                     2 * u.lora_flops;
  double tf = 0, sf = 0, sb = 0;
  const MeasuredTime* mt = nullptr;
  double scale = 1;
  if (measured) {
    if (auto it = measured->units.find(u.name); it != measured->units.end()) {
      mt = &it->second;
    } else if (auto jt = measured->units.find(u.kind); jt != measured->units.end()) {
      mt = &jt->second;
      scale = double(u.layers);
    }
  }
  if (mt) {
    if (!std::isfinite(mt->forward_s))
      throw std::invalid_argument("measured units: '" + (scale == 1 ? u.name : u.kind) + "' has no forward_s");
    sf = mt->forward_s * scale;
    tf = std::isfinite(mt->teacher_forward_s) ? mt->teacher_forward_s * scale : sf;
    sb = std::isfinite(mt->backward_s) ? mt->backward_s * scale : (fwd_student > 0 ? sf * bwd / fwd_student : sf);
  } else {
    if (require_measured && fwd_student > 0 && u.teacher_fwd + u.student_fwd > 0)
      throw std::invalid_argument("measured units: no entry for unit '" + u.name + "' or its kind '" + u.kind + "'");
    const double rate = hw.peak_tflops * 1e12 * hw.mfu;  // achieved FLOP/s
    tf = fwd_teacher / rate, sf = fwd_student / rate, sb = bwd / rate;
  }
  const int recompute = (w.checkpointing && u.recompute && u.student_bwd > 0) ? u.student_fwd : 0;
  return {double(u.teacher_fwd) * tf + double(u.student_fwd) * sf, double(recompute) * sf + double(u.student_bwd) * sb};
}

// ---------------------------------------------------------------------------------------------------------
double all_gather_bytes(double elems, double elem_bytes, int64_t p) {
  return p <= 1 ? 0 : double(p - 1) * ceil_div(elems, p) * elem_bytes;
}
double reduce_scatter_bytes(double elems, double elem_bytes, int64_t p) { return all_gather_bytes(elems, elem_bytes, p); }
double all_reduce_bytes(double elems, double elem_bytes, int64_t p) {
  return p <= 1 ? 0 : 2 * double(p - 1) / double(p) * elems * elem_bytes;
}

Link ring_link(const Hardware& hw, int64_t group, bool cross_node) {
  if (cross_node || group > hw.gpus_per_node) return {hw.inter_alpha_us * 1e-6, std::min(hw.intra_bw_GBps, hw.inter_bw_GBps) * 1e9};
  return {hw.intra_alpha_us * 1e-6, hw.intra_bw_GBps * 1e9};
}

double ring_time(int64_t p, double bytes, const Link& l) {
  if (p <= 1) return 0;
  return double(p - 1) * l.alpha_s + double(p - 1) / double(p) * bytes / l.bw_Bps;
}
double all_reduce_time(int64_t p, double bytes, const Link& l) { return 2 * ring_time(p, bytes, l); }

Link fit_link(const std::vector<CommSample>& samples, double* rms_rel) {
  // Rows (x1, x2) / t with x1 = p-1, x2 = (p-1)/p bytes; unknowns alpha, 1/B; target 1. Normal equations.
  double a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0;
  for (const CommSample& s : samples) {
    if (s.p < 2 || !(s.bytes > 0) || !(s.seconds > 0))
      throw std::invalid_argument("fit_link: every sample needs p >= 2, bytes > 0 and seconds > 0");
    const double x1 = double(s.p - 1) / s.seconds, x2 = double(s.p - 1) / double(s.p) * s.bytes / s.seconds;
    a11 += x1 * x1, a12 += x1 * x2, a22 += x2 * x2, b1 += x1, b2 += x2;
  }
  const double det = a11 * a22 - a12 * a12;
  if (samples.size() < 2 || !(det > 1e-12 * a11 * a22))
    throw std::invalid_argument("fit_link: the samples do not determine both latency and bandwidth (need two "
                                "sizes or two rank counts)");
  double alpha = (b1 * a22 - b2 * a12) / det, inv_bw = (a11 * b2 - a12 * b1) / det;
  if (!(inv_bw > 0))
    throw std::invalid_argument("fit_link: the fit gives 1/B = " + std::to_string(inv_bw) +
                                " s/byte; the timings do not grow with the size as t = (p-1) alpha + (p-1)/p S/B");
  if (alpha < 0) alpha = 0, inv_bw = b2 / a22;  // latency below resolution: the best fit with alpha >= 0
  Link l{alpha, 1.0 / inv_bw};
  if (rms_rel) {
    double e2 = 0;
    for (const CommSample& s : samples) {
      const double e = (ring_time(s.p, s.bytes, l) - s.seconds) / s.seconds;
      e2 += e * e;
    }
    *rms_rel = std::sqrt(e2 / double(samples.size()));
  }
  return l;
}

// ---------------------------------------------------------------------------------------------------------
StepPrediction predict_step(const ModelDesc& m, const Workload& w, const Hardware& hw, Strategy strategy,
                            int64_t n, const MeasuredUnits* measured, bool require_measured) {
  if (n < 1) throw std::invalid_argument("ranks must be >= 1");
  if (hw.gpus_per_node < 1) throw std::invalid_argument("gpus_per_node must be >= 1");
  StepPrediction p;
  p.strategy = strategy;
  p.ranks = n;
  const int64_t node = std::min(n, hw.gpus_per_node);  // hybrid's shard group
  if (strategy == Strategy::hybrid && n % node != 0)
    throw std::invalid_argument("hybrid on " + std::to_string(n) + " ranks: not a whole number of nodes of " +
                                std::to_string(hw.gpus_per_node));
  const int64_t nodes = n / node;
  // The frozen base's shard group.
  const int64_t group = strategy == Strategy::full ? n : strategy == Strategy::hybrid ? node : 1;
  // The trainable buffer (parallel/fsdp.h TrainableShards): its gradient is reduced onto, and AdamW updates,
  // 1/opt_group of it; opt_group 1 = replicated (none; full/hybrid with replicate_trainable).
  const bool replicated = strategy == Strategy::none || (w.replicate_trainable && strategy != Strategy::grad_op);
  const int64_t opt_group = replicated ? 1 : strategy == Strategy::hybrid ? node : n;
  const int64_t across = replicated ? 1 : strategy == Strategy::hybrid ? nodes : 1;
  p.shard_group = group;
  const double pb = m.base_bytes_per_param, tb = m.trainable_bytes_per_param;
  const Link glink = ring_link(hw, group, false);

  // The step as a chain of (gather, compute) items, one per unit pass. With prefetch (two buffers), the
  // gather of item i starts when item i-1 starts computing, so item i waits max(0, g(i) - c(i-1)); a unit
  // kept from forward into backward has no acquire of its own, so the gather after it started one item
  // earlier still. The first gather of each micro-batch has nothing to hide behind (the trainer prefetches
  // nothing across the micro-batch boundary).
  struct Item {
    double g = 0, c = 0, buf = 0;  // gather time, compute time, gathered bytes held
    bool kept = false;             // the previous item's buffer, kept from forward into backward
  };
  std::vector<Item> mb;  // one micro-batch
  double mb_gather_bytes = 0;
  const bool sharded = group > 1;
  int last_fwd = -1;
  for (size_t i = 0; i < m.units.size(); ++i)
    if (m.units[i].teacher_fwd + m.units[i].student_fwd > 0) last_fwd = int(i);
  std::vector<UnitTimes> times;
  for (const Unit& u : m.units) times.push_back(unit_times(u, w, hw, measured, require_measured));
  // A unit's flat buffer is padded to a multiple of the group: `held` bytes once gathered.
  auto held = [&](const Unit& u) { return sharded ? ceil_div(u.base_params, group) * double(group) * pb : 0.0; };
  auto gather = [&](const Unit& u) { return sharded ? ring_time(group, held(u), glink) : 0.0; };
  for (size_t i = 0; i < m.units.size(); ++i) {  // forward: every unit that runs, gathered once
    const Unit& u = m.units[i];
    if (u.teacher_fwd + u.student_fwd == 0) continue;
    mb.push_back({gather(u), times[i].forward_s, held(u), false});
    if (sharded) mb_gather_bytes += all_gather_bytes(u.base_params, pb, group);
  }
  for (int i = int(m.units.size()) - 1; i >= 0; --i) {  // backward: gathered again, but the last unit is kept
    const Unit& u = m.units[size_t(i)];
    if (u.student_bwd == 0) continue;
    const bool kept = i == last_fwd;
    mb.push_back({kept ? 0.0 : gather(u), times[size_t(i)].backward_s, held(u), kept});
    if (sharded && !kept) mb_gather_bytes += all_gather_bytes(u.base_params, pb, group);
  }
  double mb_compute = 0, mb_gather = 0, mb_exposed = 0;
  for (size_t i = 0; i < mb.size(); ++i) {
    mb_compute += mb[i].c;
    mb_gather += mb[i].g;
    if (!hw.overlap || i == 0) {
      mb_exposed += mb[i].g;
    } else {
      const double window = mb[i - 1].c + (mb[i - 1].kept && i >= 2 ? mb[i - 2].c : 0.0);
      mb_exposed += std::max(0.0, mb[i].g - window);
    }
  }
  const double ga = double(w.grad_accum);
  p.compute_s = ga * (mb_compute + (measured ? measured->overhead_s : 0.0));
  p.gather_s = ga * mb_gather;
  p.gather_exposed_s = ga * mb_exposed;
  p.frozen_bytes = ga * mb_gather_bytes;

  // The trainable buffer once per step, after the last backward (exposed). T elements of fp32, padded to a
  // multiple of n * trainable_chunk (P); what parallel/fsdp.cpp does, collective by collective.
  const double T = m.trainable_params;
  const double chunk = double(std::max<int64_t>(1, m.trainable_chunk));
  const double P = n > 1 ? std::ceil(T / (double(n) * chunk)) * double(n) * chunk : T;
  const Link wlink = ring_link(hw, n, false), olink = ring_link(hw, opt_group, false);
  auto all_gather = [&](int64_t g, double per_rank, double eb, const Link& l, double& bytes) {  // per_rank elements
    bytes += all_gather_bytes(per_rank * double(g), eb, g);
    p.trainable_comm_s += ring_time(g, per_rank * double(g) * eb, l);
  };
  if (n > 1 && !w.deterministic) {
    if (replicated) {  // all-reduce the whole gradient; the norm is computed locally
      p.grad_bytes += all_reduce_bytes(P, tb, n);
      p.trainable_comm_s += all_reduce_time(n, P * tb, wlink);
    } else {
      const double own = P / double(opt_group);
      p.grad_bytes += reduce_scatter_bytes(P, tb, opt_group);  // onto the shard group (the node for hybrid)
      p.trainable_comm_s += ring_time(opt_group, P * tb, olink);
      if (across > 1) {  // hybrid: the shard all-reduced across the nodes
        p.grad_bytes += all_reduce_bytes(own, tb, across);
        p.trainable_comm_s += all_reduce_time(across, own * tb, ring_link(hw, across, true));
      }
      all_gather(opt_group, own / chunk, 8, olink, p.param_bytes);  // the norm: f64 sums per chunk
    }
  } else if (n > 1) {  // deterministic: every micro-batch's gradient to the world shard's owner, summed in order
    const double Sw = P / double(n);
    p.grad_bytes += double(n - 1) * ga * Sw * tb;  // all-to-all: bytes sent to (= received from) the others
    p.trainable_comm_s += double(n - 1) * wlink.alpha_s + double(n - 1) * ga * Sw * tb / wlink.bw_Bps;
    all_gather(n, Sw / chunk, 8, wlink, p.param_bytes);                      // the norm over world shards
    if (opt_group != n) all_gather(n, Sw, tb, wlink, p.param_bytes);  // the summed gradient, whole
  }
  if (n > 1 && opt_group > 1) all_gather(opt_group, P / double(opt_group), tb, olink, p.param_bytes);  // parameters
  p.bytes_received = p.frozen_bytes + p.grad_bytes + p.param_bytes;

  const double owned = n > 1 ? P / double(opt_group) : T;
  p.optimizer_s = measured && std::isfinite(measured->optimizer_s)
                      ? measured->optimizer_s * (T > 0 ? owned / T : 0)
                      : owned * hw.optimizer_bytes_per_param / (hw.hbm_GBps * 1e9);

  p.comm_s = p.gather_s + p.trainable_comm_s;
  p.exposed_comm_s = p.gather_exposed_s + p.trainable_comm_s;
  p.hidden_fraction = p.comm_s > 0 ? 1 - p.exposed_comm_s / p.comm_s : NAN;
  p.step_s = p.compute_s + p.exposed_comm_s + p.optimizer_s;
  p.pairs_per_s = double(w.pairs_per_rank * w.grad_accum * n) / p.step_s;

  // Memory per rank.
  for (const Unit& u : m.units) p.memory.base += ceil_div(u.base_params, group) * pb;
  for (size_t k = 0; sharded && k < mb.size(); ++k) {  // current + prefetched (a kept unit is one buffer)
    const double next = k + 1 < mb.size() && !mb[k + 1].kept ? mb[k + 1].buf : 0.0;
    p.memory.gathered = std::max(p.memory.gathered, mb[k].buf + next);
  }
  // Adapters (replicated: the forward needs them all) + the gradient accumulator (full: it sums the
  // micro-batches before the one reduction) + the gradient shard after the reduction + Adam m and v on it;
  // deterministic: every micro-batch's gradient kept apart. (The padding to P is left out: < n * 16 KB.)
  const double shard = ceil_div(T, opt_group);
  p.memory.trainable = T * tb + T * tb + (opt_group > 1 ? shard * tb : 0.0) + 2 * shard * tb +
                       (w.deterministic && n > 1 ? ga * T * tb : 0.0);
  double kept = 0, peak_layer = 0;
  for (const Unit& u : m.units) {
    if (u.student_bwd == 0) continue;
    const bool ckpt = w.checkpointing && u.recompute;
    kept += double(u.student_fwd) * double(u.layers) * (ckpt ? u.act_in : u.act_full);
    if (ckpt) peak_layer = std::max(peak_layer, u.act_full);  // one layer recomputed at a time
  }
  p.memory.activations = kept + peak_layer;
  p.memory.workspace = hw.workspace_GB * 1e9;
  return p;
}

std::vector<StepPrediction> sweep(const ModelDesc& m, const Workload& w, const Hardware& hw,
                                  const std::vector<int64_t>& ranks, const MeasuredUnits* measured) {
  std::vector<int64_t> ns = ranks;
  ns.push_back(1);
  std::sort(ns.begin(), ns.end());
  ns.erase(std::unique(ns.begin(), ns.end()), ns.end());
  std::vector<StepPrediction> out;
  for (const Strategy s : kStrategies) {
    const StepPrediction one = predict_step(m, w, hw, s, 1, measured);
    for (const int64_t n : ns) {
      StepPrediction p = n == 1 ? one : predict_step(m, w, hw, s, n, measured);
      p.efficiency = p.pairs_per_s / (double(n) * one.pairs_per_s);
      out.push_back(p);
    }
  }
  return out;
}

double median_step_time(const std::vector<double>& pairs_per_s, double step_pairs) {
  std::vector<double> t;
  for (size_t i = 1; i < pairs_per_s.size(); ++i)
    if (pairs_per_s[i] > 0 && std::isfinite(pairs_per_s[i])) t.push_back(step_pairs / pairs_per_s[i]);
  if (t.empty()) return NAN;
  std::sort(t.begin(), t.end());
  const size_t h = t.size() / 2;
  return t.size() % 2 ? t[h] : 0.5 * (t[h - 1] + t[h]);
}

}  // namespace xv::scaling
