// xvlm2vec corpus: corpus tools. cache-teacher: the teacher's English embeddings of a pairs file, for
// data.teacher_cache (core/teacher_cache.h).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "core/kd_model.h"
#include "core/model_config.h"
#include "core/teacher_cache.h"
#include "core/train_config.h"
#include "core/train_data.h"
#include "launch/commands.h"

namespace xv::cli {

namespace fs = std::filesystem;

namespace {

struct CacheTeacherArgs {
  std::string model, pairs, out, image_root;
  int64_t batch_size = 32;
  bool quiet = false;
};

int run_cache_teacher(const CacheTeacherArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  XV_CHECK(fs::is_directory(a.model), "{}: model folder does not exist", a.model);
  const TrainData data = read_train_data(a.pairs, a.image_root);
  // The teacher is the model with its adapters off: which adapters exist does not matter here.
  LoraConfig lc;
  lc.targets = default_lora_targets(read_model_type((fs::path(a.model) / "config.json").string()));
  auto model = KdModel::load(a.model, "lora", lc, 0);
  const bool tty = ::isatty(2);
  auto progress = [&](int64_t done, int64_t total) {
    if (a.quiet) return;
    std::fprintf(stderr, tty ? "\rcache-teacher: %lld/%lld" : "cache-teacher: %lld/%lld\n", static_cast<long long>(done),
                 static_cast<long long>(total));
    if (tty && done == total) std::fprintf(stderr, "\n");
  };
  Tensor emb = compute_teacher_embeddings(*model, data, a.batch_size, progress);
  write_teacher_cache(a.out, emb, a.model, data);
  if (!a.quiet)
    std::fprintf(stderr, "cache-teacher: %lld pairs, dim %lld, %.2f s -> %s (+ %s)\n", static_cast<long long>(emb.dim(0)),
                 static_cast<long long>(emb.dim(1)),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), a.out.c_str(),
                 teacher_cache_sidecar(a.out).c_str());
  return 0;
}

}  // namespace

Runner add_corpus_tools(CLI::App& sub) {
  auto* ct = sub.add_subcommand("cache-teacher", "Teacher English embeddings of a pairs JSONL, for data.teacher_cache");
  auto a = std::make_shared<CacheTeacherArgs>();
  ct->add_option("--model", a->model, "Model folder (the teacher: the model without adapters)")->required();
  ct->add_option("--pairs", a->pairs, "JSONL of {text_en, text_xx, lang, image?} (as data.train)")->required();
  ct->add_option("--out", a->out, "Output .npy, float32 (N, dim); the sidecar OUT.json records model and pairs")
      ->required();
  ct->add_option("--image-root", a->image_root, "Folder image paths are relative to (default: the JSONL's folder)");
  ct->add_option("--batch-size", a->batch_size, "Pairs per forward pass")->default_val(32)->check(CLI::PositiveNumber);
  ct->add_flag("--quiet", a->quiet, "No progress output");
  return [ct, a] {
    if (ct->parsed()) return run_cache_teacher(*a);
    return -1;
  };
}

Runner add_corpus(CLI::App& app) {
  auto* sub = app.add_subcommand("corpus", "Corpus tools: build, inspect, validate, split, cache-teacher");
  sub->require_subcommand(1);
  std::vector<Runner> runners = {add_corpus_build(*sub), add_corpus_tools(*sub)};
  return [runners] {
    for (const auto& r : runners)
      if (const int rc = r(); rc >= 0) return rc;
    return 0;
  };
}

}  // namespace xv::cli
