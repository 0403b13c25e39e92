// Image-embedding throughput of a phi3_v model folder on a list of image files (one path per line). Loads once,
// warms up on the first batch, then times `--repeat` passes over the list. Prints one JSON line
// {images_per_s, ...} for benchmarks/images_vs_peer.sh.
//   bench_image_embed MODEL_DIR LIST.txt [--mode tower|full] [--threads N] [--batch-size B] [--repeat R]
//                     [--dump OUT.npy]
// --mode tower: what the peer does with the Hugging Face CLIP image processor and a PyTorch forward of the same
//   tower: decode, resize the shortest edge to the tower's image size (PIL bicubic, bit for bit), centre crop,
//   rescale and normalise (CLIP mean and std), then the tower to the hidden state Phi-3-vision takes
//   (layer -2, the CLS token dropped). --dump writes the first batch's output, (B, patches, C) f32.
// --mode full: the model's own image path as `eval run` uses it (the Phi-3-vision processor with its HD crops,
//   the tower, the projector and the decoder): one embedding per image.
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/npy.h"
#include "image/image.h"
#include "image/phi3v_processor.h"
#include "kernels/cpu/runtime.h"
#include "kernels/ops.h"
#include "models/embedder.h"
#include "models/phi3v.h"

namespace {

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// CLIPImageProcessor's steps: shortest edge to `size` (the long edge truncated), PIL bicubic; centre crop
// (offsets rounded down); x / 255 then (x - mean) / std in f32. -> (3, size, size) at `out`.
void clip_preprocess(const xv::Image& img, int size, float* out) {
  const bool wide = img.width >= img.height;
  const int s = std::min(img.width, img.height), l = std::max(img.width, img.height);
  const int nl = int(int64_t(size) * l / s);
  const xv::Image r = xv::pil_resize(img, wide ? nl : size, wide ? size : nl, xv::PilFilter::kBicubic);
  const int top = (r.height - size) / 2, left = (r.width - size) / 2;
  const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        const uint8_t v = r.rgb[(size_t(top + y) * size_t(r.width) + size_t(left + x)) * 3 + size_t(c)];
        const float f = float(double(v) * (1.0 / 255.0));
        out[(size_t(c) * size_t(size) + size_t(y)) * size_t(size) + size_t(x)] = (f - mean[c]) / stdv[c];
      }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_image_embed MODEL_DIR LIST.txt [--mode tower|full] [--threads N] "
                         "[--batch-size B] [--repeat R] [--dump OUT.npy]\n");
    return 2;
  }
  xv::cpu::tune_allocator();
  int threads = 0, repeat = 3;
  int64_t batch = 16;
  std::string mode = "tower", dump;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--threads") threads = std::stoi(argv[i + 1]);
    else if (a == "--batch-size") batch = std::stoll(argv[i + 1]);
    else if (a == "--repeat") repeat = std::stoi(argv[i + 1]);
    else if (a == "--mode") mode = argv[i + 1];
    else if (a == "--dump") dump = argv[i + 1];
    else {
      std::fprintf(stderr, "bench_image_embed: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    XV_CHECK(mode == "tower" || mode == "full", "--mode is '{}'; expected tower or full", mode);
    XV_CHECK(batch >= 1 && repeat >= 1, "--batch-size and --repeat must be at least 1");
    xv::ops::set_num_threads(threads);
    std::vector<std::string> paths;
    {
      std::ifstream in(argv[2]);
      XV_CHECK(in, "{}: cannot open the image list", argv[2]);
      for (std::string line; std::getline(in, line);)
        if (!line.empty()) paths.push_back(line);
      XV_CHECK(!paths.empty(), "{}: no image path in the list", argv[2]);
    }
    const int64_t n = int64_t(paths.size());
    std::function<void(int64_t, int64_t, bool)> pass;
    double prep_s = 0, tower_s = 0;  // tower mode: decode + preprocessing, and the tower  // images [b, e); dump the output?
    std::unique_ptr<xv::Embedder> emb;
    std::unique_ptr<xv::Phi3VModel> model;
    if (mode == "full") {
      emb = xv::Embedder::load(argv[1]);
      XV_CHECK(emb->arch() == "phi3_v", "{}: arch '{}' has no image path", argv[1], emb->arch());
      pass = [&](int64_t b, int64_t e, bool) {
        std::vector<xv::EmbedItem> items;
        for (int64_t i = b; i < e; ++i) items.push_back({"<|image_1|>\nRepresent the given image.", paths[size_t(i)]});
        xv::EmbedOptions o;
        o.batch_size = batch;
        emb->embed(items, o);
      };
    } else {
      model = std::make_unique<xv::Phi3VModel>(xv::Phi3VModel::load(argv[1]));
      const int size = int(model->vision.clip.cfg.image_size);
      // The images of a batch are decoded and preprocessed in parallel, one per thread (as the Embedder does).
      pass = [&, size](int64_t b, int64_t e, bool want_dump) {
        const auto t0 = std::chrono::steady_clock::now();
        xv::Tensor x({e - b, 3, size, size});
        float* px = x.data<float>();
        const size_t one = size_t(3) * size_t(size) * size_t(size);
        std::string err;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t i = b; i < e; ++i) {
          try {
            clip_preprocess(xv::load_image(paths[size_t(i)]), size, px + size_t(i - b) * one);
          } catch (const std::exception& ex) {
#pragma omp critical
            err = ex.what();
          }
        }
        XV_CHECK(err.empty(), "{}", err);
        const auto t1 = std::chrono::steady_clock::now();
        const xv::Tensor y = model->vision.clip.forward_patches(x, nullptr, nullptr, xv::LoraRun{});
        const auto t2 = std::chrono::steady_clock::now();
        if (!want_dump) {
          prep_s += std::chrono::duration<double>(t1 - t0).count();
          tower_s += std::chrono::duration<double>(t2 - t1).count();
        }
        if (want_dump && !dump.empty()) xv::write_npy(dump, y);
      };
    }
    const auto t_w = std::chrono::steady_clock::now();
    pass(0, std::min(batch, n), true);  // warm-up (and the dump)
    const double warm = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_w).count();
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < repeat; ++r)
      for (int64_t b = 0; b < n; b += batch) pass(b, std::min(n, b + batch), false);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nlohmann::json j = {{"impl", "xvlm2vec"}, {"mode", mode}, {"images", n}, {"repeat", repeat},
                        {"batch_size", batch}, {"threads", xv::ops::num_threads()}, {"seconds", s},
                        {"warmup_seconds", warm}, {"images_per_s", double(n) * repeat / s},
                        {"peak_rss_mb", peak_rss_mb()}};
    if (mode == "tower") j["preprocess_seconds"] = prep_s, j["tower_seconds"] = tower_s;
    std::printf("%s\n", j.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_image_embed: %s\n", e.what());
    return 1;
  }
  return 0;
}
