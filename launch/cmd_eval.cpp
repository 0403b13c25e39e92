// xvlm2vec eval: `eval run` evaluates a model (and an adapter) on a benchmark folder and writes the report;
// `eval make-text-benchmark` builds a text-retrieval benchmark from a held-out corpus; `eval import` turns
// released MMEB / MMMEB evaluation files into one (docs/benchmark-format.md).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "data/corpus.h"
#include "eval/benchmark.h"
#include "eval/import_vlm2vec.h"
#include "eval/make_multimodal.h"
#include "eval/make_text_benchmark.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "launch/cli_checks.h"
#include "launch/commands.h"

namespace xv::cli {

namespace fs = std::filesystem;

namespace {

struct RunArgs {
  std::string model, adapter, benchmark, out, train_dir;
  int64_t batch_size = 64;
  bool quiet = false, truncate = false;
};

struct MakeArgs {
  std::string corpus, out, name;
  int64_t candidates = 1000, queries = 500, english = 1000;
  uint64_t seed = 0;
  std::vector<std::string> langs = {"it", "es", "fr", "de"};
  bool quiet = false;
};

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_eval(const RunArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  check_output_dir(a.out, "--out");
  require_dir(a.model, "model folder");
  if (!a.adapter.empty()) require_dir(a.adapter, "adapter folder");
  XV_CHECK(a.train_dir.empty() || fs::is_regular_file(fs::path(a.train_dir) / "metrics.jsonl"),
           "{}: no metrics.jsonl here; --train-dir must be a training output_dir", a.train_dir);
  const Benchmark b = read_benchmark(a.benchmark);
  EvalRunOptions opt;
  opt.batch_size = a.batch_size;
  opt.truncate = a.truncate;
  const bool tty = ::isatty(2);
  if (!a.quiet) {
    // Items per second since the model started and the time left; on a pipe, one line every 5 s at most, and the
    // last.
    auto started = std::make_shared<std::chrono::steady_clock::time_point>();
    auto printed = std::make_shared<std::chrono::steady_clock::time_point>();
    opt.progress = [tty, started, printed](const std::string& who, int64_t done, int64_t total) {
      const auto now = std::chrono::steady_clock::now();
      if (done == 0) {  // the runner announces each model before its first batch
        *started = now;
        return;
      }
      const double secs = std::chrono::duration<double>(now - *started).count();
      const bool last = done == total;
      if (!tty && !last && std::chrono::duration<double>(now - *printed).count() < 5) return;
      *printed = now;
      std::string rate;
      if (secs > 0 && done > 0) {
        const double per_s = double(done) / secs;
        const int64_t eta = int64_t(double(total - done) / per_s + 0.5);
        rate = fmt::format(", {:.1f} items/s", per_s);
        if (!last) rate += fmt::format(", eta {}:{:02}:{:02}", eta / 3600, eta / 60 % 60, eta % 60);
      }
      std::fprintf(stderr, tty ? "\reval: %s %lld/%lld items%s   " : "eval: %s %lld/%lld items%s\n", who.c_str(),
                   static_cast<long long>(done), static_cast<long long>(total), rate.c_str());
      if (tty && last) std::fprintf(stderr, "\n");
    };
  }
  const EvalResults r = evaluate(a.model, a.adapter, b, opt);
  const std::string md = write_report(r, a.out, a.train_dir);
  std::fputs(md.c_str(), stdout);
  if (!a.quiet)
    std::fprintf(stderr, "eval: %zu tasks, %lld distinct items (%lld with an image), %s, %.2f s -> %s\n",
                 r.tasks.size(), static_cast<long long>(r.unique_texts), static_cast<long long>(r.unique_images),
                 r.has_after ? "teacher and student" : "teacher only",
                 since(t0), a.out.c_str());
  return 0;
}

int run_make(const MakeArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  check_output_dir(a.out, "--out");
  require_regular_file(a.corpus, "corpus file");
  ReadCorpusOptions ro;
  ro.images = false;
  ro.tokens = false;
  ro.teacher = false;
  const Corpus c = read_corpus(a.corpus, ro);
  TextBenchmarkOptions o;
  o.candidates = a.candidates;
  o.queries = a.queries;
  o.english = a.english;
  o.seed = a.seed;
  o.langs = a.langs;
  o.name = a.name.empty() ? "text-retrieval-" + fs::path(a.corpus).stem().string() : a.name;
  o.source = fmt::format("{} ({})", a.corpus, c.meta.fingerprint.empty() ? "no fingerprint" : c.meta.fingerprint);
  std::string langs;
  for (const auto& l : a.langs) langs += (langs.empty() ? "" : ",") + l;
  o.created_by = fmt::format(
      "xvlm2vec eval make-text-benchmark --corpus {} --out {} --candidates {} --queries {} --english {} --seed {} "
      "--langs {}",
      a.corpus, a.out, a.candidates, a.queries, a.english, a.seed, langs);
  const Benchmark b = make_text_benchmark(c, o, a.corpus);
  write_benchmark(a.out, b);
  if (!a.quiet)
    std::fprintf(stderr, "make-text-benchmark: %zu tasks x %lld queries x %lld candidates, %zu English texts, %.2f s -> %s\n",
                 b.tasks.size(), static_cast<long long>(a.queries), static_cast<long long>(a.candidates),
                 b.english.size(), since(t0), a.out.c_str());
  return 0;
}

struct ImportArgs {
  std::vector<std::string> files;
  std::string out, name = "imported", image_root, lang, family;
  bool quiet = false;
};

int run_import(const ImportArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  check_output_dir(a.out, "--out");
  if (!a.image_root.empty()) require_dir(a.image_root, "image folder (--image-root)");
  std::vector<ImportSource> srcs;
  std::string cmd = "xvlm2vec eval import --out " + a.out + " --name " + a.name;
  if (!a.image_root.empty()) cmd += " --image-root " + a.image_root;
  if (!a.lang.empty()) cmd += " --lang " + a.lang;
  if (!a.family.empty()) cmd += " --family " + a.family;
  for (const auto& f : a.files) {
    ImportSource s;
    s.file = f;
    s.language = a.lang;
    s.family = a.family;
    s.image_root = a.image_root;
    srcs.push_back(std::move(s));
    cmd += " " + f;
  }
  ImportOptions o;
  o.name = a.name;
  o.out_dir = a.out;
  o.created_by = cmd;
  const Benchmark b = import_vlm2vec(srcs, o);
  write_benchmark(a.out, b);
  const Benchmark back = read_benchmark(a.out);  // the images resolve from the folder as written
  if (!a.quiet) {
    int64_t queries = 0, images = 0;
    for (const auto& t : back.tasks)
      for (const auto& q : t.queries) {
        ++queries;
        images += !q.image.empty();
        for (const auto& p : q.candidate_images) images += !p.empty();
      }
    std::fprintf(stderr, "eval import: %zu tasks, %lld queries, %lld image references (not copied), %.2f s -> %s\n",
                 back.tasks.size(), static_cast<long long>(queries), static_cast<long long>(images), since(t0),
                 a.out.c_str());
  }
  return 0;
}

struct MultimodalArgs {
  std::string data, out, split = "heldout", name = "mmmeb-offline";
  int64_t candidates = 1000, queries = 500, grounding = 8;
  uint64_t seed = 0;
  std::vector<std::string> langs = {"en", "it", "es", "fr", "de"};
  bool quiet = false, text_only = false;
};

int run_make_multimodal(const MultimodalArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  check_output_dir(a.out, "--out");
  require_dir(a.data, "prepared data folder (--data)");
  MultimodalOptions o;
  o.data_dir = a.data;
  o.out_dir = a.out;
  o.split = a.split;
  o.candidates = a.candidates;
  o.queries = a.queries;
  o.grounding_candidates = a.grounding;
  o.seed = a.seed;
  o.langs = a.langs;
  o.name = a.name;
  o.text_only = a.text_only;
  std::string langs;
  for (const auto& l : a.langs) langs += (langs.empty() ? "" : ",") + l;
  o.created_by = fmt::format(
      "xvlm2vec eval make-multimodal --data {} --out {} --split {} --candidates {} --queries {} "
      "--grounding-candidates {} --seed {} --langs {} --name {}{}",
      a.data, a.out, a.split, a.candidates, a.queries, a.grounding, a.seed, langs, a.name,
      a.text_only ? " --text-only" : "");
  const Benchmark b = make_multimodal(o);
  write_benchmark(a.out, b);
  const Benchmark back = read_benchmark(a.out);  // the images resolve from the folder as written
  if (!a.quiet) {
    for (const auto& t : back.tasks)
      std::fprintf(stderr, "  %-24s %-14s %4lld queries x %4lld candidates\n", t.name.c_str(), t.task_type.c_str(),
                   static_cast<long long>(t.num_queries), static_cast<long long>(t.num_candidates));
    for (const auto& n : back.notes) std::fprintf(stderr, "  note: %s\n", n.c_str());
    std::fprintf(stderr, "eval make-multimodal: %zu tasks (%s split), %zu English texts, %.2f s -> %s\n",
                 back.tasks.size(), a.split.c_str(), back.english.size(), since(t0), a.out.c_str());
  }
  return 0;
}

}  // namespace

Runner add_eval(CLI::App& app) {
  auto* sub =
      app.add_subcommand("eval", "Evaluate embedding models (MMMEB protocol): run, make-text-benchmark, make-multimodal, import");
  sub->require_subcommand(1);

  auto* run = sub->add_subcommand("run", "Evaluate a model, before and after an adapter, on a benchmark folder");
  auto r = std::make_shared<RunArgs>();
  run->add_option("--model", r->model, "Model folder (Hugging Face layout); the base model is the 'before' column")
      ->required();
  run->add_option("--adapter", r->adapter, "PEFT adapter folder; adds the 'after' column (the student)");
  run->add_option("--benchmark", r->benchmark, "Benchmark folder (benchmark.json + task JSONL files)")->required();
  run->add_option("--out", r->out, "Report folder: results.json, results.md, p_at_1.svg (loss.svg)")->required();
  run->add_option("--train-dir", r->train_dir, "Training output_dir: loss.svg from its metrics.jsonl");
  run->add_option("--batch-size", r->batch_size, "Texts per forward pass")->default_val(64)->check(at_least(1));
  run->add_flag("--truncate", r->truncate,
                "bert: cut texts longer than the model's limit (as sentence-transformers does) instead of failing");
  run->add_flag("--quiet", r->quiet, "No progress output (the table still goes to stdout)");

  auto* mk = sub->add_subcommand("make-text-benchmark", "Build a text-retrieval benchmark (xx->en, en->xx) from a corpus");
  auto m = std::make_shared<MakeArgs>();
  mk->add_option("--corpus", m->corpus, "Held-out corpus (.h5, docs/corpus-format.md)")->required();
  mk->add_option("--out", m->out, "Benchmark folder to write")->required();
  mk->add_option("--candidates", m->candidates, "Candidates per query, the gold included")
      ->default_val(1000)
      ->check(in_range(2, double(int64_t{1} << 30)));
  mk->add_option("--queries", m->queries, "Queries per language and direction")
      ->default_val(500)
      ->check(at_least(1));
  mk->add_option("--english", m->english, "Held-out English texts for the English-preservation score")
      ->default_val(1000)
      ->check(at_least(0));
  mk->add_option("--seed", m->seed, "Seed of every sampling choice")->default_val(0);
  mk->add_option("--langs", m->langs, "Languages, comma-separated")->delimiter(',')->default_str("it,es,fr,de");
  mk->add_option("--name", m->name, "Benchmark name (default: text-retrieval-<corpus file stem>)");
  mk->add_flag("--quiet", m->quiet, "No summary line");

  auto* im = sub->add_subcommand("import", "Turn released MMEB / MMMEB evaluation JSONL files (one per dataset and "
                                            "language) into a benchmark folder, images referenced where they are");
  auto ia = std::make_shared<ImportArgs>();
  im->add_option("files", ia->files, "Released files, named <dataset>_<lang>.jsonl (e.g. ImageNet-1K_it.jsonl)")
      ->required()
      ->check(CLI::ExistingFile);
  im->add_option("--out", ia->out, "Benchmark folder to write")->required();
  im->add_option("--name", ia->name, "Benchmark name")->default_val("imported");
  im->add_option("--image-root", ia->image_root, "Folder relative image paths start from (default: each file's)");
  im->add_option("--lang", ia->lang, "Language of every file (default: from each file name)");
  im->add_option("--family", ia->family, "Task family of every file (default: from the MMEB dataset name)")
      ->check(CLI::IsMember({"classification", "vqa", "retrieval", "grounding"}));
  im->add_flag("--quiet", ia->quiet, "No summary line");

  auto* mm = sub->add_subcommand("make-multimodal", "Build the offline multimodal suite (classification, retrieval, "
                                                    "grounding, VQA in five languages) from prepared data");
  auto mo = std::make_shared<MultimodalArgs>();
  mm->add_option("--data", mo->data, "Prepared data folder (scripts/install-multimodal-data.sh writes it)")->required();
  mm->add_option("--out", mo->out, "Benchmark folder to write")->required();
  mm->add_option("--split", mo->split, "Which items: heldout (evaluation) or train")
      ->default_val("heldout")
      ->check(CLI::IsMember({"heldout", "train"}));
  mm->add_option("--candidates", mo->candidates, "Retrieval: candidates per query, the gold included (at most)")
      ->default_val(1000)
      ->check(in_range(2, double(int64_t{1} << 30)));
  mm->add_option("--queries", mo->queries, "Queries per task (at most)")->default_val(500)->check(at_least(1));
  mm->add_option("--grounding-candidates", mo->grounding, "Grounding: regions per query, the gold included")
      ->default_val(8)
      ->check(in_range(2, 1000));
  mm->add_option("--seed", mo->seed, "Seed of every sampling choice (the split does not depend on it)")->default_val(0);
  mm->add_option("--langs", mo->langs, "Languages, comma-separated")->delimiter(',')->default_str("en,it,es,fr,de");
  mm->add_option("--name", mo->name, "Benchmark name")->default_val("mmmeb-offline");
  mm->add_flag("--text-only", mo->text_only, "Only the name-translation tasks (xx->en, en->xx): for a text model");
  mm->add_flag("--quiet", mo->quiet, "No summary");

  return [run, mk, im, mm, r, m, ia, mo] {
    if (run->parsed()) return run_eval(*r);
    if (mm->parsed()) return run_make_multimodal(*mo);
    if (mk->parsed()) return run_make(*m);
    if (im->parsed()) return run_import(*ia);
    return 0;
  };
}

}  // namespace xv::cli
