// xvlm2vec corpus: corpus tools (build is in cmd_corpus_build.cpp).
//   inspect CORPUS          counts, length histograms, images, samples
//   validate CORPUS         every offset, UTF-8, image, token id and fingerprint (exit 1 when invalid)
//   split CORPUS            training and held-out parts by whole sources
//   cache-teacher           the teacher's English embeddings: into the corpus (/teacher), or for a JSONL of
//                           pairs into FILE.npy (data.teacher_cache)
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "models/backbones.h"
#include "models/kd/kd_model.h"
#include "core/model_config.h"
#include "train/teacher_cache.h"
#include "train/train_config.h"
#include "data/train_data.h"
#include "core/file_util.h"
#include "core/resources.h"
#include "data/corpus.h"
#include "data/corpus_split.h"
#include "data/corpus_stream.h"
#include "launch/cli_checks.h"
#include "launch/commands.h"

namespace xv::cli {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct CacheTeacherArgs {
  std::string model, corpus, pairs, out, image_root;
  int64_t batch_size = 32;
  bool quiet = false;
};

// The teacher is the model with its adapters off: which adapters exist does not matter here.
std::unique_ptr<KdModel> load_teacher(const std::string& dir) {
  require_dir(dir, "model folder (--model)");
  LoraConfig lc;
  lc.targets = default_lora_targets(read_model_type((fs::path(dir) / "config.json").string()));
  return KdModel::load(dir, "lora", lc, 0);
}

std::function<void(int64_t, int64_t)> progress_printer(bool quiet, Clock::time_point t0) {
  const bool tty = ::isatty(2);
  return [quiet, tty, t0](int64_t done, int64_t total) {
    if (quiet) return;
    const double s = since(t0);
    std::fprintf(stderr, tty ? "\r\x1b[Kcache-teacher: %lld/%lld pairs, %.1f pairs/s" : "cache-teacher: %lld/%lld pairs, %.1f pairs/s\n",
                 static_cast<long long>(done), static_cast<long long>(total), s > 0 ? double(done) / s : 0.0);
    if (tty && done == total) std::fprintf(stderr, "\n");
  };
}

int run_cache_teacher(const CacheTeacherArgs& a) {
  const auto t0 = Clock::now();
  XV_CHECK(a.corpus.empty() != a.pairs.empty(),
           "corpus cache-teacher: give either a CORPUS (an HDF5 corpus: the embeddings go into its /teacher block) or "
           "--pairs JSONL with --out FILE.npy");
  if (!a.pairs.empty()) {
    XV_CHECK(!a.out.empty(), "corpus cache-teacher: --pairs needs --out FILE.npy");
    check_output_file(a.out, "--out");
    check_output_file(teacher_cache_sidecar(a.out), "--out (its sidecar)");
  }
  auto model = load_teacher(a.model);
  auto progress = progress_printer(a.quiet, t0);
  if (!a.pairs.empty()) {
    XV_CHECK(!a.out.empty(), "corpus cache-teacher: --pairs needs --out FILE.npy");
    const TrainData data = read_train_data(a.pairs, a.image_root);
    Tensor emb = compute_teacher_embeddings(*model, data, a.batch_size, progress);
    write_teacher_cache(a.out, emb, a.model, data);
    if (!a.quiet)
      std::fprintf(stderr, "cache-teacher: %lld pairs, dim %lld, %.2f s -> %s (+ %s)\n",
                   static_cast<long long>(emb.dim(0)), static_cast<long long>(emb.dim(1)), since(t0), a.out.c_str(),
                   teacher_cache_sidecar(a.out).c_str());
    return 0;
  }
  XV_CHECK(a.out.empty(), "corpus cache-teacher: --out is for --pairs; with a CORPUS the embeddings go into it");
  XV_CHECK(is_hdf5_file(a.corpus), "{}: not an HDF5 corpus", a.corpus);
  // The pairs in file order, read by the source (images included) and embedded batch by batch.
  auto src = open_pair_source(a.corpus);
  const int64_t P = src->size(), D = model->dim();
  CorpusTeacher t;
  t.dim = D;
  t.model_fingerprint = model_fingerprint(a.model);
  t.corpus_fingerprint = src->fingerprint();
  // The block is written into a copy of the file, renamed over it at the end: room for both, before the work.
  std::error_code ec;
  const uint64_t file = uint64_t(fs::file_size(a.corpus, ec));
  require_disk(a.corpus, file + 4 * uint64_t(P) * uint64_t(D) + (uint64_t(1) << 20),
               fmt::format("cache-teacher: a copy of the corpus with its /teacher block ({} x {} floats)", P, D),
               ": free some space next to the corpus");
  require_memory(4 * uint64_t(P) * uint64_t(D),
                 fmt::format("cache-teacher: the embeddings of {} pairs ({} floats each)", P, D),
                 ": use a machine with more memory, or split the corpus (corpus split) and cache each part");
  t.embeddings.resize(size_t(P * D));
  for (int64_t s = 0; s < P; s += a.batch_size) {
    const int64_t e = std::min(P, s + a.batch_size);
    std::vector<int64_t> idx;
    for (int64_t i = s; i < e; ++i) idx.push_back(i);
    const std::vector<TrainPair> batch = src->fetch(idx);
    Tensor emb;
    try {
      emb = model->teacher_embed(batch);
    } catch (const Error& err) {
      fail("{} to pair {}: {}", src->where(s), e - 1, err.what());
    }
    const std::vector<float> v = emb.to_vector();
    std::copy(v.begin(), v.end(), t.embeddings.begin() + s * D);
    progress(e, P);
  }
  write_corpus_teacher(a.corpus, t);
  if (!a.quiet)
    std::fprintf(stderr, "cache-teacher: %lld pairs, dim %lld, %.2f s -> %s:/teacher\n", static_cast<long long>(P),
                 static_cast<long long>(D), since(t0), a.corpus.c_str());
  return 0;
}

struct InspectArgs {
  std::string corpus;
  int64_t samples = 5;
  uint64_t seed = 0;
};

struct ValidateArgs {
  std::string corpus, tokenizer;
  int64_t max_problems = 50;
  bool quiet = false;
};

int run_validate(const ValidateArgs& a) {
  const auto t0 = Clock::now();
  Corpus c;
  try {
    c = read_corpus(a.corpus);
  } catch (const Error& e) {
    std::fprintf(stderr, "corpus validate: INVALID: %s\n", e.what());
    return 1;
  }
  const auto problems = validate_corpus(c, a.corpus, a.tokenizer, size_t(a.max_problems));
  for (const auto& p : problems) std::fprintf(stderr, "  %s\n", p.c_str());
  if (!problems.empty()) {
    std::fprintf(stderr, "corpus validate: INVALID: %s: %zu problem(s)%s\n", a.corpus.c_str(), problems.size(),
                 problems.size() >= size_t(a.max_problems) ? " (listing stopped)" : "");
    return 1;
  }
  if (!a.quiet)
    std::fprintf(stderr, "corpus validate: %s is valid: %zu pairs, %zu images decoded%s, fingerprint %s (%.2f s)\n",
                 a.corpus.c_str(), c.pairs.size(), c.image_width.size(),
                 c.tokens ? fmt::format(", {} token ids checked", c.tokens->en.ids.size() + c.tokens->xx.ids.size()).c_str()
                          : "",
                 c.meta.fingerprint.c_str(), since(t0));
  return 0;
}

struct SplitArgs {
  std::string corpus, train_out, heldout_out;
  SplitOptions o;
  bool keep_shared = false;
  bool quiet = false;
};

// Whether two paths name one file: the same file when both exist, else the same normalised absolute path.
int run_split(SplitArgs a) {
  // Refused before anything is read or written: an output onto the input, or both outputs into one file,
  // would destroy data.
  XV_CHECK(!same_file(a.train_out, a.heldout_out), "corpus split: --train and --heldout are the same file ({}): give two",
           a.train_out);
  XV_CHECK(!same_file(a.train_out, a.corpus), "corpus split: --train {} is the input corpus: write the parts elsewhere",
           a.train_out);
  XV_CHECK(!same_file(a.heldout_out, a.corpus),
           "corpus split: --heldout {} is the input corpus: write the parts elsewhere", a.heldout_out);
  check_output_file(a.train_out, "--train");
  check_output_file(a.heldout_out, "--heldout");
  const Corpus c = read_corpus(a.corpus);
  a.o.drop_shared_english = !a.keep_shared;
  SplitResult r = split_corpus(c, a.o, fs::path(a.corpus).filename().string());
  const std::string cmd = fmt::format("xvlm2vec corpus split {}", a.corpus);
  r.train.meta.created_by = r.heldout.meta.created_by = cmd + " (from: " + c.meta.created_by + ")";
  require_disk(a.train_out, corpus_payload_bytes(r.train) + (uint64_t(1) << 20), "--train: the training part",
               ": free some space, or write it elsewhere");
  require_disk(a.heldout_out, corpus_payload_bytes(r.heldout) + (uint64_t(1) << 20), "--heldout: the held-out part",
               ": free some space, or write it elsewhere");
  write_corpus(a.train_out, r.train);
  write_corpus(a.heldout_out, r.heldout);
  if (!a.quiet) {
    // The held-out sources by name, the first 30 (a corpus of package descriptions has tens of thousands).
    constexpr size_t kShown = 30;
    std::string keys;
    for (size_t i = 0; i < r.heldout_keys.size() && i < kShown; ++i)
      keys += (keys.empty() ? "" : ", ") + r.heldout_keys[i];
    if (r.heldout_keys.size() > kShown) keys += fmt::format(" and {} more", r.heldout_keys.size() - kShown);
    std::fprintf(stderr, "corpus split: %zu training pairs -> %s; %zu held-out pairs -> %s\n", r.train.pairs.size(),
                 a.train_out.c_str(), r.heldout.pairs.size(), a.heldout_out.c_str());
    if (!keys.empty()) std::fprintf(stderr, "  held-out sources: %s\n", keys.c_str());
    if (r.dropped_shared > 0)
      std::fprintf(stderr, "  %lld held-out pairs dropped: their English text is also in the training part\n",
                   static_cast<long long>(r.dropped_shared));
  }
  return 0;
}

}  // namespace

Runner add_corpus_tools(CLI::App& sub) {
  auto* ins = sub.add_subcommand("inspect", "Counts per language and source, length histograms, images, samples");
  auto ia = std::make_shared<InspectArgs>();
  ins->add_option("corpus", ia->corpus, "Corpus file (.h5)")->required();
  ins->add_option("--samples", ia->samples, "Example pairs to print")->default_val(5)->check(at_least(0));
  ins->add_option("--seed", ia->seed, "Which examples")->default_val(0);

  auto* val = sub.add_subcommand("validate", "Check every offset, text, image, token id and fingerprint of a corpus");
  auto va = std::make_shared<ValidateArgs>();
  val->add_option("corpus", va->corpus, "Corpus file (.h5)")->required();
  val->add_option("--tokenizer", va->tokenizer, "tokenizer.json the corpus's token ids must come from");
  val->add_option("--max-problems", va->max_problems, "Stop listing after this many")->default_val(50)->check(at_least(1));
  val->add_flag("--quiet", va->quiet, "Print only problems");

  auto* spl = sub.add_subcommand("split", "Training and held-out parts of a corpus, by whole sources");
  auto sa = std::make_shared<SplitArgs>();
  spl->add_option("corpus", sa->corpus, "Corpus file (.h5)")->required();
  spl->add_option("--train", sa->train_out, "Output: the training part (.h5)")->required();
  spl->add_option("--heldout", sa->heldout_out, "Output: the held-out part (.h5)")->required();
  spl->add_option("--by", sa->o.by, "source (whole sources, e.g. gettext catalogs) or pair")->default_val("source");
  spl->add_option("--heldout-fraction", sa->o.heldout_fraction, "Fraction of the pairs to hold out, by whole keys")
      ->default_val(0.2);
  spl->add_option("--heldout-sources", sa->o.heldout, "Hold out exactly these sources (comma-separated)")->delimiter(',');
  spl->add_option("--seed", sa->o.seed, "Order in which sources are drawn")->default_val(0);
  spl->add_flag("--keep-shared-english", sa->keep_shared,
                "Keep held-out pairs whose English text also occurs in the training part");
  spl->add_flag("--quiet", sa->quiet, "No summary");

  auto* ct = sub.add_subcommand("cache-teacher",
                                "Teacher English embeddings: into a corpus's /teacher block, or for a JSONL into a .npy");
  auto a = std::make_shared<CacheTeacherArgs>();
  ct->add_option("corpus", a->corpus, "HDF5 corpus: the embeddings are stored in it (data.teacher_cache: corpus)");
  ct->add_option("--model", a->model, "Model folder (the teacher: the model without adapters)")->required();
  ct->add_option("--pairs", a->pairs, "Instead of a corpus: a JSONL of {text_en, text_xx, lang, image?} (as data.train)");
  ct->add_option("--out", a->out, "With --pairs: output .npy, float32 (N, dim); the sidecar OUT.json records model and pairs");
  ct->add_option("--image-root", a->image_root, "With --pairs: folder image paths are relative to (default: the JSONL's folder)");
  ct->add_option("--batch-size", a->batch_size, "Pairs per forward pass")->default_val(32)->check(at_least(1));
  ct->add_flag("--quiet", a->quiet, "No progress output");

  return [=] {
    if (ins->parsed()) {
      const Corpus c = read_corpus(ia->corpus);
      std::fputs(inspect_corpus(c, ia->corpus, ia->samples, ia->seed).c_str(), stdout);
      return 0;
    }
    if (val->parsed()) return run_validate(*va);
    if (spl->parsed()) return run_split(*sa);
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
