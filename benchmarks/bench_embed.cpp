// Embedding throughput of a model folder on a JSON list of sentences: loads once, warms up, then times
// `--repeat` passes. Prints one JSON line {sentences_per_s, ...} for benchmarks/minilm_vs_peer.sh.
//   bench_embed MODEL_DIR SENTENCES.json [--threads N] [--batch-size B] [--repeat R]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "models/embedder.h"
#include "core/error.h"
#include "core/file_util.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/runtime.h"
#include "kernels/ops.h"

static double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_embed MODEL_DIR SENTENCES.json [--threads N] [--batch-size B] [--repeat R]\n");
    return 2;
  }
  xv::cpu::select_blas_core(argc, argv);
  xv::cpu::tune_allocator();
  int threads = 0, repeat = 3;
  int64_t batch = 32;
  for (int i = 3; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads") threads = std::stoi(argv[i + 1]);
    else if (a == "--batch-size") batch = std::stoll(argv[i + 1]);
    else if (a == "--repeat") repeat = std::stoi(argv[i + 1]);
  }
  try {
    xv::ops::set_num_threads(threads);
    auto model = xv::Embedder::load(argv[1]);
    std::vector<xv::EmbedItem> items;
    for (const auto& s : nlohmann::json::parse(xv::read_file(argv[2]))) items.push_back({s.get<std::string>(), ""});
    xv::EmbedOptions opt;
    opt.batch_size = batch;
    opt.normalize = true;
    opt.truncate = true;
    std::vector<xv::EmbedItem> warm(items.begin(), items.begin() + std::min<size_t>(items.size(), 64));
    model->embed(warm, opt);
    double best = 1e30;
    for (int r = 0; r < repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      model->embed(items, opt);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("{\"impl\": \"xvlm2vec\", \"sentences\": %zu, \"threads\": %d, \"batch_size\": %lld, "
                "\"blas_core\": \"%s\", \"best_s\": %.4f, \"sentences_per_s\": %.1f, \"peak_rss_mb\": %.0f}\n",
                items.size(), xv::ops::num_threads(), static_cast<long long>(batch), xv::cpu::blas_core_name(), best, double(items.size()) / best, peak_rss_mb());
  } catch (const xv::Error& e) {
    std::fprintf(stderr, "bench_embed: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
