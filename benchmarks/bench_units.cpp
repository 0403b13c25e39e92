// Per-unit compute of the bert KD step, in the `--measured-units` format of benchmarks/scaling (README there):
// for one side of one micro-batch (B sequences of T tokens, every token real), the embeddings' forward, a
// layer's student forward (LoRA on, activations kept), teacher forward (adapters off) and backward (input and
// LoRA gradients, no recompute), run in the KD step's order (per layer: teacher, English, other language) and
// averaged over the layers, the two sides and `--reps` repetitions after one warm-up; AdamW
// with clipping over the adapters; and the per-micro-batch work outside the units (pooling, the loss and its
// gradient, for both sides). A plain main: several copies started together (e.g. `mpirun -np 3`) measure
// what each rank gets when ranks share the cores; only the first copy (OMPI_COMM_WORLD_RANK / SLURM_PROCID
// unset or 0) writes.
//
//   bench_units --model DIR --batch 8 --tokens 32 [--lora-rank 16] [--lora-alpha 32] [--lora-dropout 0.05]
//               [--targets query,key,value,dense] [--threads 1] [--reps 20] [--out units.json]
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/bert.h"
#include "models/pooling.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"
#include "core/error.h"
#include "core/file_util.h"
#include "train/schedule.h"
#include "kernels/cpu/runtime.h"
#include "kernels/ops.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    const size_t e = std::min(s.find(',', b), s.size());
    if (e > b) out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

int launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "PMI_RANK"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 0;
}

int run(int argc, char** argv) {
  std::string model_dir, out;
  int64_t B = 8, T = 32, reps = 20, threads = 1;
  xv::LoraConfig lc;
  lc.r = 16;
  lc.alpha = 32;
  lc.dropout = 0.0f;
  lc.targets = {"query", "key", "value", "dense"};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    XV_CHECK(i + 1 < argc, "{} needs a value", a);
    const std::string v = argv[++i];
    auto num = [&](int64_t lo) {
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      XV_CHECK(end && *end == 0 && n >= lo, "{} must be an integer >= {}, got '{}'", a, lo, v);
      return int64_t(n);
    };
    if (a == "--model") model_dir = v;
    else if (a == "--batch") B = num(1);
    else if (a == "--tokens") T = num(2);
    else if (a == "--reps") reps = num(1);
    else if (a == "--threads") threads = num(1);
    else if (a == "--lora-rank") lc.r = num(1);
    else if (a == "--lora-alpha") lc.alpha = float(num(1));
    else if (a == "--lora-dropout") {
      char* end = nullptr;
      lc.dropout = std::strtof(v.c_str(), &end);
      XV_CHECK(end && *end == 0 && lc.dropout >= 0.0f && lc.dropout < 1.0f, "--lora-dropout must be in [0, 1), got '{}'",
               v);
    }
    else if (a == "--targets") lc.targets = split(v);
    else if (a == "--out") out = v;
    else xv::fail("unknown option {} (--model, --batch, --tokens, --lora-rank, --lora-alpha, --lora-dropout, --targets, "
                  "--threads, --reps, --out)", a);
  }
  XV_CHECK(!model_dir.empty(), "--model DIR (a bert model folder) is required");
  xv::cpu::tune_allocator();  // as the xvlm2vec command does: tensors stay on the heap between passes
  xv::ops::set_num_threads(int(threads));
  const xv::BertModel m = xv::BertModel::load(model_dir);
  XV_CHECK(T <= m.cfg.max_seq_length, "--tokens {} is more than the model's {}", T, m.cfg.max_seq_length);
  xv::BertLora lora = xv::BertLora::create(m, lc, 1);
  // Adapters with B non-zero, as after the first update (B = 0 would not change the work, but keeps it honest).
  for (auto& a : lora.adapters) {
    std::vector<float> b(static_cast<size_t>(a.B.numel()));
    for (size_t k = 0; k < b.size(); ++k) b[k] = 1e-3f * float(int(k % 7) - 3);
    a.B = xv::Tensor::from_vector(a.B.shape(), b);
  }
  const int64_t C = m.cfg.hidden_size, L = int64_t(m.layers.size()), V = m.cfg.vocab_size;
  std::vector<int32_t> ids(size_t(B * T));
  for (size_t k = 0; k < ids.size(); ++k) ids[k] = int32_t(1000 + (k * 7919) % size_t(V - 1000));
  const std::vector<float> mask(size_t(B * T), 1.0f);
  const xv::Tensor ids_t = m.input_ids(ids, B, T), mask_t = m.input_mask(mask, B, T);
  const xv::LoraRun run{lc.dropout > 0.0f ? uint64_t{12345} : 0};  // dropout masks on when dropout > 0

  // As the KD step runs them: per layer the teacher pass and both student sides (the same weights, hot), then
  // per layer both sides' backward. Each call is timed alone; a side's time is the mean over both sides.
  double t_emb = 0, t_fwd = 0, t_teacher = 0, t_bwd = 0, t_over = 0;
  for (int64_t r = -1; r < reps; ++r) {  // r = -1: warm-up, not counted
    const bool count = r >= 0;
    auto t0 = Clock::now();
    std::array<xv::Tensor, 2> x = {m.embed(ids_t, B, T), m.embed(ids_t, B, T)};
    if (count) t_emb += seconds_since(t0) / 2;
    xv::Tensor xt = x[0];
    std::array<xv::BertActs, 2> acts;
    for (auto& a : acts) m.begin_acts(a, ids, mask, B, T);
    for (int64_t l = 0; l < L; ++l) {
      t0 = Clock::now();
      m.layer_forward(l, xt, mask_t, B, T, nullptr, {}, nullptr);
      if (count) t_teacher += seconds_since(t0);
      for (int side = 0; side < 2; ++side) {
        t0 = Clock::now();
        m.layer_forward_kept(l, x[size_t(side)], acts[size_t(side)], &lora, run);
        if (count) t_fwd += seconds_since(t0) / 2;
      }
    }
    // Outside the units, per micro-batch: pooling of the teacher and both student sides, both loss terms and
    // their gradients back through the pooling.
    t0 = Clock::now();
    const xv::Tensor t_pool = xv::mean_pool(xt, mask_t, B, T);
    std::array<xv::Tensor, 2> dx;
    for (int side = 0; side < 2; ++side) {
      const xv::Tensor s_pool = xv::mean_pool(x[size_t(side)], mask_t, B, T);
      xv::Tensor d = s_pool.zeros_like();
      xv::ops::mse_loss(s_pool, t_pool, d, 0.5f);
      dx[size_t(side)] = xv::mean_pool_backward(d, mask_t, B, T);
      dx[size_t(side)].reshape({B * T, C});
    }
    if (count) t_over += seconds_since(t0);
    for (int64_t l = L - 1; l >= 0; --l)
      for (int side = 0; side < 2; ++side) {
        t0 = Clock::now();
        m.layer_backward(l, acts[size_t(side)], dx[size_t(side)], lora, run, nullptr);
        if (count) t_bwd += seconds_since(t0) / 2;
      }
  }
  // AdamW + clipping over the adapters, as a step on one process does it (parallel/fsdp.h).
  std::vector<xv::TrainableTensor> trainable;
  int64_t n_trainable = 0;
  for (auto& a : lora.adapters) {
    trainable.push_back({a.a_name(), &a.A, &a.dA});
    trainable.push_back({a.b_name(), &a.B, &a.dB});
    n_trainable += a.A.numel() + a.B.numel();
  }
  auto comm = xv::par::make_self_communicator();
  xv::par::TrainableOptions to;
  to.world = comm.get();
  xv::par::TrainableShards opt(trainable, xv::ops::AdamWParams{}, to);
  double t_opt = 0;
  for (int64_t r = -1; r < reps; ++r) {
    const auto t0 = Clock::now();
    opt.step(1e-4f, 1.0);
    if (r >= 0) t_opt += seconds_since(t0);
  }
  const double n = double(reps);
  nlohmann::ordered_json j;
  j["units"]["embeddings"] = {{"forward_s", t_emb / n}};
  j["units"]["layer"] = {{"forward_s", t_fwd / (n * double(L))},
                         {"teacher_forward_s", t_teacher / (n * double(L))},
                         {"backward_s", t_bwd / (n * double(L))}};
  j["optimizer_s"] = t_opt / n;
  j["overhead_s"] = t_over / n;
  j["notes"] = fmt::format("bench_units: {}, {} x {} tokens per side, LoRA r={} dropout {} on {}, {} thread(s), {} "
                           "reps; {} trainable elements",
                           model_dir, B, T, lc.r, lc.dropout, fmt::join(lc.targets, ","), threads, reps, n_trainable);
  const std::string text = j.dump(2) + "\n";
  if (launcher_rank() == 0) {
    if (out.empty()) std::fputs(text.c_str(), stdout);
    else xv::write_file_atomic(out, text);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_units: %s\n", e.what());
    return 1;
  }
}
