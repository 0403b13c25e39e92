// Does the corpus reader keep up with training? Measures, on the same machine and the same pairs:
//   step:   pairs/s the training step consumes (forward + backward + AdamW of a LoRA student, inputs prepared
//           beforehand: pure compute), with --threads compute threads;
//   reader: pairs/s the streaming reader delivers (data/corpus_stream.h: HDF5 reads on its I/O thread,
//           KdModel::prepare = tokenize / decode + HD-preprocess on W worker threads), per W;
// and prints the ratio reader / step (the reader must never be the bottleneck: >= 10x).
//
//   bench_corpus_reader MODEL_DIR CORPUS.h5 [--threads N] [--batch-size B] [--steps S] [--pairs P]
//                       [--workers 1,2] [--with-images DIR] [--tokenize 0|1]
// --tokenize 1: ignore the corpus's pre-tokenised ids, so the workers tokenize every text.
// --with-images DIR: instead of CORPUS.h5's own pairs, a corpus of its English/other texts where every pair
// carries one of the images in DIR (PNG/JPEG, cycled), written to CORPUS.h5.images.h5 first.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/file_util.h"
#include "image/image.h"
#include "models/kd/kd_model.h"
#include "train/schedule.h"
#include "data/corpus.h"
#include "data/corpus_stream.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/runtime.h"
#include "kernels/ops.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CORPUS's pairs with an image each (the files of `dir`, cycled).
static std::string with_images(const std::string& corpus, const std::string& dir) {
  xv::ReadCorpusOptions ro;
  ro.images = ro.tokens = ro.teacher = false;
  xv::Corpus c = xv::read_corpus(corpus, ro);
  xv::Corpus out;
  out.meta.source = "benchmark";
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string ext = e.path().extension().string();
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  XV_CHECK(!files.empty(), "{}: no PNG or JPEG files", dir);
  for (const auto& f : files) {
    const std::string bytes = xv::read_file(f);
    const xv::Image img = xv::load_image(f);
    out.images.push(bytes);
    out.image_names.push(fs::path(f).filename().string());
    out.image_width.push_back(int32_t(img.width));
    out.image_height.push_back(int32_t(img.height));
  }
  const int32_t src = int32_t(out.sources.push("benchmark"));
  for (size_t i = 0; i < c.pairs.size(); ++i)
    out.add_pair(c.text_en.at(size_t(c.pairs.en[i])), c.text_xx.at(size_t(c.pairs.xx[i])),
                 c.meta.languages[c.pairs.lang[i]], int64_t(i % files.size()), src);
  const std::string path = corpus + ".images.h5";
  xv::write_corpus(path, out);
  return path;
}

int main(int argc, char** argv) {
  xv::cpu::select_blas_core(argc, argv);
  xv::cpu::tune_allocator();
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_corpus_reader MODEL_DIR CORPUS.h5 [--threads N] [--batch-size B] [--steps S] "
                         "[--pairs P] [--workers 1,2] [--with-images DIR]\n");
    return 2;
  }
  int threads = 0, steps = 10;
  int64_t batch = 8, read_pairs = 2000;
  std::vector<int> workers = {1, 2};
  std::string images_dir;
  bool tokenize = false;  // ignore the corpus's pre-tokenised ids: the workers tokenize
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--threads") threads = std::stoi(argv[i + 1]);
    else if (a == "--batch-size") batch = std::stoll(argv[i + 1]);
    else if (a == "--steps") steps = std::stoi(argv[i + 1]);
    else if (a == "--pairs") read_pairs = std::stoll(argv[i + 1]);
    else if (a == "--with-images") images_dir = argv[i + 1];
    else if (a == "--tokenize") tokenize = std::stoi(argv[i + 1]) != 0;
    else if (a == "--workers") {
      workers.clear();
      std::string s = argv[i + 1];
      for (size_t p = 0; p < s.size();) {
        const size_t q = std::min(s.find(',', p), s.size());
        workers.push_back(std::stoi(s.substr(p, q - p)));
        p = q + 1;
      }
    }
  }
  try {
    xv::ops::set_num_threads(threads);
    const std::string corpus = images_dir.empty() ? std::string(argv[2]) : with_images(argv[2], images_dir);
    xv::LoraConfig lc;
    lc.r = 8, lc.alpha = 64, lc.dropout = 0.1f;
    lc.targets = {"query", "key", "value", "dense", "qkv_proj", "o_proj", "gate_up_proj", "down_proj",
                  "q_proj", "k_proj", "v_proj", "out_proj"};
    auto model = xv::KdModel::load(argv[1], "lora", lc, 0);
    const xv::KdModel* mp = model.get();
    auto prepare = [mp](const xv::TrainPair& p) { return mp->prepare(p); };
    const std::string tok = (fs::path(argv[1]) / "tokenizer.json").string();
    xv::SourceOptions so;
    if (!tokenize) so.tokenizer_json = tok;
    auto src = std::shared_ptr<xv::PairSource>(xv::open_pair_source(corpus, so));

    // The step: batches from the stream, prepared before the clock starts.
    std::vector<std::vector<xv::TrainPair>> batches;
    {
      xv::StreamOptions o;
      o.seed = 1;
      o.prepare = prepare;
      xv::PairStream s(src, o);
      for (int k = 0; k < steps + 1; ++k) {
        std::vector<xv::TrainPair> b;
        for (int64_t i = 0; i < batch; ++i) b.push_back(s.next());
        batches.push_back(std::move(b));
      }
    }
    auto comm = xv::par::make_self_communicator();
    xv::par::TrainableOptions to;
    to.world = comm.get();
    xv::par::TrainableShards opt(model->trainable(), xv::ops::AdamWParams{}, to);
    auto step = [&](const std::vector<xv::TrainPair>& b, uint64_t seed) {
      model->zero_grad();
      xv::KdStepOptions ko;
      ko.dropout_seed = seed;
      ko.checkpointing = true;
      model->forward_backward(b, ko);
      opt.step(1e-5f, 0.0);
    };
    step(batches[0], 1);  // warm-up
    const auto t0 = Clock::now();
    for (int k = 1; k <= steps; ++k) step(batches[size_t(k)], uint64_t(k) + 1);
    const double step_pps = double(steps * batch) / seconds_since(t0);

    nlohmann::ordered_json out;
    out["model"] = model->arch();
    out["corpus"] = fs::path(corpus).filename().string();
    out["images"] = !images_dir.empty();
    out["pretokenized"] = !tokenize;
    out["batch_size"] = batch;
    out["compute_threads"] = xv::ops::num_threads();
    out["step_pairs_per_s"] = step_pps;
    std::fprintf(stderr, "step: %.1f pairs/s (%s, batch %lld, %d compute threads)\n", step_pps, model->arch().c_str(),
                 static_cast<long long>(batch), xv::ops::num_threads());
    for (int w : workers) {
      xv::StreamOptions o;
      o.seed = 2;
      o.workers = w;
      o.prefetch = 512;
      o.prepare = prepare;
      const auto t1 = Clock::now();
      xv::PairStream s(src, o);
      for (int64_t i = 0; i < read_pairs; ++i) s.next();
      const double pps = double(read_pairs) / seconds_since(t1);
      out["reader_pairs_per_s"][std::to_string(w)] = pps;
      out["reader_pairs_per_s_per_worker"][std::to_string(w)] = pps / w;
      out["ratio_reader_over_step"][std::to_string(w)] = pps / step_pps;
      std::fprintf(stderr, "reader, %d worker(s): %.0f pairs/s (%.0f per worker) = %.1fx the step\n", w, pps, pps / w,
                   pps / step_pps);
    }
    std::printf("%s\n", out.dump().c_str());
  } catch (const xv::Error& e) {
    std::fprintf(stderr, "bench_corpus_reader: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
