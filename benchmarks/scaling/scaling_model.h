// The cost model of the distributed trainer: from a model's FSDP units, a workload and a machine, the step
// time, the bytes each rank receives, the memory per rank and the scaling efficiency of each sharding
// strategy on n ranks. Pure functions, no I/O (main.cpp reads and writes the files). Every formula is
// written out in docs/scaling.md; the input formats are in benchmarks/scaling/README.md.
//
// Units: parameter and element counts are plain numbers (double: 4e9 overflows nothing and the model is
// approximate anyway), sizes in bytes, times in seconds, FLOPs in floating-point operations (a multiply-add
// is 2). "Pass" = one forward or backward run of a unit over one side (English or other language) of one
// micro-batch of B pairs on one rank.
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace xv::scaling {

enum class Strategy { full, grad_op, none, hybrid };
inline constexpr Strategy kStrategies[] = {Strategy::full, Strategy::grad_op, Strategy::none, Strategy::hybrid};
const char* strategy_name(Strategy s);                // "full", "grad_op", "none", "hybrid"
Strategy parse_strategy(const std::string& s);        // throws std::invalid_argument

// The machine and the efficiency assumptions (benchmarks/scaling/hardware-h100.json documents each field
// and where its value comes from; these defaults are the same values).
struct Hardware {
  std::string name = "H100 SXM 80GB, 8 per node, NVLink 4 + 8x400 Gb/s InfiniBand";
  double peak_tflops = 989;              // dense bf16 tensor-core peak per GPU (TFLOP/s)
  double mfu = 0.40;                     // achieved fraction of the peak on the units' matmuls and attention
  double hbm_GBps = 3350;                // memory bandwidth per GPU: AdamW is memory-bound
  double memory_GB = 80;                 // per GPU: only marks what does not fit
  int64_t gpus_per_node = 8;             // ranks sharing the fast link (hybrid shards within them)
  double intra_bw_GBps = 450;            // NVLink bus bandwidth per GPU (nccl-tests "busbw")
  double intra_alpha_us = 10;            // latency per ring step inside a node
  double inter_bw_GBps = 50;             // InfiniBand per GPU: one 400 Gb/s NIC per GPU
  double inter_alpha_us = 20;            // latency per ring step when the ring crosses nodes
  bool overlap = true;                   // the next unit's gather runs while this unit computes
  double backward_linear_factor = 1.0;   // frozen Linear backward / forward FLOPs: input gradient only
  double backward_attention_factor = 2;  // attention backward / forward FLOPs (dQ, dK, dV, dP vs QK^T, PV)
  double optimizer_bytes_per_param = 28; // AdamW traffic per trainable element: p r/w 8, g 4, m r/w 8, v r/w 8
  double workspace_GB = 1.0;             // CUDA context, cuBLAS workspace, NCCL buffers, allocator slack
};

// What one rank runs per optimizer step (docs/design.md section 2, reference hyper-parameters).
struct Workload {
  int64_t pairs_per_rank = 8;        // B: pairs per rank per micro-batch
  int64_t grad_accum = 4;            // micro-batches per optimizer step
  int64_t text_tokens = 64;          // text positions per side of a pair (phi3_v) / all positions (bert)
  int64_t image_tokens = 757;        // decoder positions of the image per side; 0 = text-only pairs
  int64_t crops = 5;                 // CLIP passes per image: 4 HD crops + the global thumbnail
  int64_t lora_rank = 8;             // r
  int64_t clip_layers_per_unit = 8;  // CLIP layers per FSDP unit (group 0 also holds the CLIP embeddings)
  bool checkpointing = true;         // activation checkpointing at layer granularity
  bool deterministic = false;        // parallel.deterministic: micro-batch gradients exchanged all-to-all
  bool replicate_trainable = false;  // parallel.replicate_trainable: full/hybrid keep the adapters whole
};

// One FSDP unit: one flat buffer of frozen base parameters, gathered whole.
struct Unit {
  std::string name;    // "decoder.0", "clip.0-7", "embeddings", ...
  std::string kind;    // key into a measured-time table: "decoder_layer", "clip_layer", "layer", ...
  int64_t layers = 1;  // transformer layers inside (activations and recompute are per layer; a measured
                       // time given for the kind is per layer)
  double base_params = 0;  // frozen elements in the unit's flat buffer
  double lora_params = 0;  // adapter elements of the unit (they live in the separate trainable buffer)
  // FLOPs of one pass (B samples):
  double linear_flops = 0;  // 2 * (matmul weights) * tokens: the frozen Linear layers (and the patch conv)
  double attn_flops = 0;    // 4 * T^2 * C per sample per layer: QK^T and PV
  double lora_flops = 0;    // 2 * r * (in + out) * tokens per adapted Linear = 2 * lora_params * tokens
  // Passes per micro-batch.
  int teacher_fwd = 0;  // adapters off, English side only, nothing kept
  int student_fwd = 0;  // adapters on, activations kept for backward
  int student_bwd = 0;  // 0: the unit's weights are not needed in backward (frozen embeddings)
  bool recompute = false;  // a checkpointed layer stack: with checkpointing, backward recomputes each student pass
  // Activations, bytes per layer per student pass:
  double act_in = 0;    // the layer input: all that is kept with checkpointing
  double act_full = 0;  // everything backward needs without checkpointing
};

struct ModelDesc {
  std::string name;
  std::vector<Unit> units;               // in forward execution order
  double base_bytes_per_param = 2;       // frozen base storage and gather dtype (bf16 on the GPU)
  double trainable_bytes_per_param = 4;  // fp32 adapters, gradients and Adam moments
  double trainable_params = 0;           // sum of the units' lora_params: the trainable flat buffer
  int64_t trainable_chunk = 4096;        // the flat buffer is padded to a multiple of ranks x this (the
                                         // gradient norm's chunk, parallel/fsdp.h kNormChunk)
  double loaded_params = 0;              // sum of the units' base_params
  double checkpoint_params = 0;          // the whole checkpoint, parts the embedding path never runs included
  std::string counted;                   // what loaded_params counts and what it leaves out, in words
};

// Phi-3.5-vision (VLM2Vec) as the trainer shards it: CLIP groups, projector, embed_tokens, 32 decoder layers.
ModelDesc phi35v_model(const Workload& w);

// A BERT encoder (sentence-transformers), for the CPU validation: embeddings + one unit per layer.
struct BertShape {
  int64_t vocab_size = 30522, hidden_size = 384, intermediate_size = 1536, num_hidden_layers = 6;
  int64_t max_position_embeddings = 512, type_vocab_size = 2;
  std::vector<std::string> lora_targets = {"query", "key", "value", "dense"};  // "dense": all three
  double base_bytes_per_param = 4;   // the CPU path stores and gathers f32
  double activation_bytes = 4;
};
ModelDesc bert_model(const BertShape& shape, const Workload& w);  // w.text_tokens = positions per side

// Measured compute times (benchmarks/scaling/README.md): by exact unit name (the whole unit) or by kind
// (per layer, multiplied by Unit::layers). NaN: not given.
struct MeasuredTime {
  double forward_s = NAN;          // one student forward pass
  double teacher_forward_s = NAN;  // one teacher forward pass (default: forward_s)
  double backward_s = NAN;         // one student backward pass, recompute not included (default: forward_s
                                   // scaled by the FLOP ratio of backward to forward)
};
struct MeasuredUnits {
  std::map<std::string, MeasuredTime> units;
  double optimizer_s = NAN;  // AdamW over the whole trainable set on one rank (scaled by the shard fraction)
  double overhead_s = 0;     // per micro-batch, outside the units (data, loss, pooling)
};

// Per micro-batch compute of one unit: forward = teacher + student passes; backward = recompute (with
// checkpointing) + student backward passes. `measured` may be null. Throws std::invalid_argument when
// `require_measured` and neither the unit's name nor its kind is in the table (a unit with no FLOPs is 0).
struct UnitTimes {
  double forward_s = 0, backward_s = 0;
};
UnitTimes unit_times(const Unit& u, const Workload& w, const Hardware& hw, const MeasuredUnits* measured,
                     bool require_measured = false);

// Bytes a rank receives in one collective over p ranks (the trainer's CommStats accounting), for a buffer
// of `elems` elements of `elem_bytes` each, padded to a multiple of p:
//   all-gather:     (p-1) * ceil(elems/p) * elem_bytes    (= (p-1)/p * padded size)
//   reduce-scatter: (p-1) * ceil(elems/p) * elem_bytes
//   all-reduce:     2 (p-1)/p * elems * elem_bytes         (ring: reduce-scatter + all-gather)
double all_gather_bytes(double elems, double elem_bytes, int64_t p);
double reduce_scatter_bytes(double elems, double elem_bytes, int64_t p);
double all_reduce_bytes(double elems, double elem_bytes, int64_t p);

// A link of the alpha-beta model: latency per ring step and bus bandwidth per rank.
struct Link {
  double alpha_s = 0;
  double bw_Bps = 1;
};
// The link a ring over `group` ranks runs at: inside one node (group <= gpus_per_node and !cross_node) the
// intra-node link; otherwise the slowest link of the ring, the inter-node one.
Link ring_link(const Hardware& hw, int64_t group, bool cross_node);
// Ring all-gather / reduce-scatter over p ranks of a buffer of `bytes` (the full, gathered size):
//   t = (p-1) * alpha + (p-1)/p * bytes / B.    All-reduce: 2x that. p = 1: 0.
double ring_time(int64_t p, double bytes, const Link& l);
double all_reduce_time(int64_t p, double bytes, const Link& l);

// One timed all-gather: p ranks, the gathered buffer of `bytes`, `seconds` per call.
struct CommSample {
  int64_t p = 2;
  double bytes = 0, seconds = 0;
};
// alpha and B of ring_time fitted to samples by least squares on the relative error (sizes span decades):
// minimises sum ((ring_time(p, bytes) - seconds) / seconds)^2, linear in alpha and 1/B. Needs two samples
// that tell them apart (two sizes, or two rank counts); throws std::invalid_argument otherwise, or when the
// timings do not grow with the size. A negative latency (below what the sizes resolve) becomes 0, with the
// bandwidth refitted alone. `rms_rel` gets the fit's RMS relative error.
Link fit_link(const std::vector<CommSample>& samples, double* rms_rel = nullptr);

struct Memory {  // bytes per rank
  double base = 0;         // the frozen shard (or the whole base when replicated)
  double gathered = 0;     // the gathered units in flight: current + prefetched
  double trainable = 0;    // fp32 adapters, gradient accumulator, gradient shard, Adam m and v
  double activations = 0;  // what backward keeps, per micro-batch
  double workspace = 0;
  double total() const { return base + gathered + trainable + activations + workspace; }
};

struct StepPrediction {
  Strategy strategy = Strategy::full;
  int64_t ranks = 1;
  int64_t shard_group = 1;      // ranks the frozen base is sharded over (1: replicated)
  double compute_s = 0;         // grad_accum micro-batches of unit compute (+ overhead)
  double gather_s = 0;          // the base all-gathers: busy time of the communication stream
  double gather_exposed_s = 0;  // the part compute did not hide
  double trainable_comm_s = 0;  // the trainable buffer's collectives at the end of the step (all exposed)
  double optimizer_s = 0;       // AdamW on the (shard of the) trainable buffer
  double step_s = 0;            // compute + exposed gathers + trainable collectives + optimizer
  double comm_s = 0;            // gather_s + trainable_comm_s
  double exposed_comm_s = 0;    // gather_exposed_s + trainable_comm_s
  double hidden_fraction = NAN; // 1 - exposed / comm; NaN without communication
  double bytes_received = 0;    // per rank per optimizer step (all collectives) = the three below
  double frozen_bytes = 0;      // base all-gathers                        (the trainer's comm_frozen_bytes)
  double grad_bytes = 0;        // reduce-scatter, all-reduce, all-to-all  (comm_grad_bytes)
  double param_bytes = 0;       // trainable all-gathers: norm sums, parameters (comm_param_bytes)
  double pairs_per_s = 0;       // all ranks: B * grad_accum * ranks / step_s
  double efficiency = NAN;      // pairs_per_s(n) / (n * pairs_per_s(1)); filled by sweep()
  Memory memory;
};

// One optimizer step of `strategy` on `ranks` ranks. Throws std::invalid_argument for a hybrid world that
// is not a whole number of nodes.
StepPrediction predict_step(const ModelDesc& m, const Workload& w, const Hardware& hw, Strategy strategy,
                            int64_t ranks, const MeasuredUnits* measured = nullptr, bool require_measured = false);

// Every strategy at every rank count (1 is added when missing: efficiency needs it), with the efficiency.
std::vector<StepPrediction> sweep(const ModelDesc& m, const Workload& w, const Hardware& hw,
                                  const std::vector<int64_t>& ranks, const MeasuredUnits* measured = nullptr);

// The median per-step time of a run from its logged throughput: step_pairs / pairs_per_s per logged line,
// the first line skipped (warm-up); lines with pairs_per_s <= 0 are ignored. NaN when nothing is left.
double median_step_time(const std::vector<double>& pairs_per_s, double step_pairs);

}  // namespace xv::scaling
