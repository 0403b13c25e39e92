// Self-KD training-step throughput: pairs/s and peak RSS of forward + backward + AdamW on a model folder,
// LoRA student, teacher = adapters off. Prints one JSON line for benchmarks/train_vs_peer.sh.
//   bench_train MODEL_DIR PAIRS.json [--threads N] [--batch-size B] [--steps S] [--r R] [--checkpointing 0|1]
// PAIRS.json: [[en, xx], ...] or [[en, xx, image path], ...]; batches are taken in order, cycling.
// LoRA r (default 8), alpha 64, dropout 0 on VLM2Vec's targets (bert: query, key, value, dense).
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/file_util.h"
#include "models/kd/kd_model.h"
#include "train/schedule.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/runtime.h"
#include "kernels/ops.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"

static double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

int main(int argc, char** argv) {
  xv::cpu::select_blas_core(argc, argv);
  xv::cpu::tune_allocator();
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_train MODEL_DIR PAIRS.json [--threads N] [--batch-size B] [--steps S] [--r R] "
                         "[--checkpointing 0|1]\n");
    return 2;
  }
  int threads = 0, steps = 20, ckpt = 0;
  int64_t batch = 8, r = 8;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--threads") threads = std::stoi(argv[i + 1]);
    else if (a == "--batch-size") batch = std::stoll(argv[i + 1]);
    else if (a == "--steps") steps = std::stoi(argv[i + 1]);
    else if (a == "--r") r = std::stoll(argv[i + 1]);
    else if (a == "--checkpointing") ckpt = std::stoi(argv[i + 1]);
  }
  try {
    xv::ops::set_num_threads(threads);
    std::vector<xv::TrainPair> pairs;
    for (const auto& p : nlohmann::json::parse(xv::read_file(argv[2])))
      pairs.push_back({p[0].get<std::string>(), p[1].get<std::string>(), "", p.size() > 2 ? p[2].get<std::string>() : ""});
    xv::LoraConfig lc;
    lc.r = r, lc.alpha = 64, lc.dropout = 0.0f;
    lc.targets = {"query", "key", "value", "dense", "qkv_proj", "o_proj", "gate_up_proj", "down_proj",
                  "q_proj", "k_proj", "v_proj", "out_proj"};
    auto model = xv::KdModel::load(argv[1], "lora", lc, 0);
    // The trainer's optimizer on one process: global-norm clipping and AdamW (parallel/fsdp.h).
    xv::ops::AdamWParams oc;
    oc.lr = 1e-5f;
    auto comm = xv::par::make_self_communicator();
    xv::par::TrainableOptions to;
    to.world = comm.get();
    xv::par::TrainableShards opt(model->trainable(), oc, to);
    xv::KdStepOptions so;
    so.checkpointing = ckpt != 0;
    auto run = [&](int step) {
      std::vector<xv::TrainPair> b;
      for (int64_t i = 0; i < batch; ++i) b.push_back(pairs[size_t((step * batch + i) % int64_t(pairs.size()))]);
      model->zero_grad();
      model->forward_backward(b, so);
      opt.step(oc.lr, 0.3);
    };
    run(0);  // warm-up
    const auto t0 = std::chrono::steady_clock::now();
    for (int s = 1; s <= steps; ++s) run(s);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("{\"impl\": \"xvlm2vec\", \"arch\": \"%s\", \"steps\": %d, \"batch_size\": %lld, \"threads\": %d, \"r\": %lld, "
                "\"blas_core\": \"%s\", \"seconds\": %.3f, \"pairs_per_s\": %.1f, \"peak_rss_mb\": %.0f}\n",
                model->arch().c_str(), steps, static_cast<long long>(batch), xv::ops::num_threads(), static_cast<long long>(r),
                xv::cpu::blas_core_name(), secs, double(steps * batch) / secs, peak_rss_mb());
  } catch (const xv::Error& e) {
    std::fprintf(stderr, "bench_train: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
