#include "train/trainer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/resources.h"
#include "core/storage.h"
#include "core/file_util.h"
#include "core/model_config.h"
#include "data/corpus_stream.h"
#include "data/train_data.h"
#include "kernels/ops.h"
#include "models/backbones.h"
#include "models/unit_store.h"
#include "parallel/fsdp.h"
#include "parallel/sharded_checkpoint.h"
#include "train/checkpoint.h"
#include "train/memory_plan.h"
#include "train/parallel_plan.h"
#include "train/schedule.h"
#include "train/teacher_cache.h"

namespace xv {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Keys a resumed run must share with its checkpoint: they change what is computed. Paths may move, and
// threads, activation checkpointing, logging, checkpointing and export do not change the numbers.
const char* kResumeKeys[] = {"seed",          "trainable",          "model.weight_dtype",
                             "lora.r",        "lora.alpha",         "lora.dropout",
                             "lora.targets",  "lora.init",          "lora.rslora",
                             "train.epochs",  "train.max_steps",    "train.batch_size",
                             "train.lr",      "train.schedule",     "train.warmup_steps",
                             "train.weight_decay", "train.betas",   "train.eps",
                             "train.max_grad_norm", "train.image_prefix_loss", "data.bucket_window",
                             "parallel.deterministic"};

const char* kTerms[] = {"loss_en", "loss_xx", "prefix_en", "prefix_xx", "loss"};

double current_rss_mb() {
  std::ifstream f("/proc/self/statm");
  long long pages_total = 0, pages_resident = 0;
  if (!(f >> pages_total >> pages_resident)) return 0.0;
  return double(pages_resident) * double(::sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

double peak_rss_mb() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

std::string nonfinite(double v) { return std::isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf"; }

std::string hms(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
}

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// metrics.jsonl without the lines of steps after `step` (the part of an interrupted run that a resume redoes).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::istringstream in(read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

// What a killed run leaves half-written: checkpoint staging folders (checkpoints/.step-N.tmp.PID), export staging
// folders (.adapter.tmp.PID, .merged.tmp.PID, and their .old when killed while replacing), and the temporary
// files of metrics.jsonl and config.yaml. None of it is ever read; a resumed run removes it.
void remove_stale_staging(const std::string& output_dir) {
  std::error_code ec;
  const fs::path root = fs::path(output_dir) / "checkpoints";
  if (fs::is_directory(root, ec))
    for (const auto& e : fs::directory_iterator(root, ec)) {
      const std::string n = e.path().filename().string();
      if (!n.empty() && n[0] == '.' && n.find(".tmp.") != std::string::npos) fs::remove_all(e.path(), ec);
    }
  if (!fs::is_directory(output_dir, ec)) return;
  for (const auto& e : fs::directory_iterator(output_dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(".adapter.tmp.", 0) == 0 || n.rfind(".merged.tmp.", 0) == 0 || n.rfind("metrics.jsonl.tmp.", 0) == 0 ||
        n.rfind("config.yaml.tmp.", 0) == 0)
      fs::remove_all(e.path(), ec);
  }
}

struct FileCloser {
  std::FILE* f = nullptr;
  ~FileCloser() {
    if (f) std::fclose(f);
  }
};

// One run of `xvlm2vec train`, as the named steps train() calls in order. Every rank runs it; rank 0 ("the
// lead") also prints, writes metrics.jsonl and config.yaml, and exports.
class TrainRun {
 public:
  TrainRun(const TrainConfig& cfg_in, const TrainOptions& o)
      : t_start_(Clock::now()), o_(o), cfg_(resolve_train_config(cfg_in)), config_yaml_(train_config_yaml(cfg_)) {
    if (cfg_.train.threads > 0) ops::set_num_threads(int(cfg_.train.threads));
    par_ = make_parallel_plan(cfg_, o.world, device_);
    W_ = par_.world->size(), R_ = par_.world->rank();
    lead_ = R_ == 0;
  }

  TrainSummary run() {
    open_data();
    const fs::path out(cfg_.output_dir);
    std::error_code ec;
    const bool had_out = fs::exists(out, ec), had_logs = fs::exists(out / "logs", ec);
    open_rank_log();
    try {
      return train_steps();
    } catch (const std::exception& e) {
      rlog(std::string("error: ") + e.what());
      if (!started_) undo_outputs(had_out, had_logs);
      throw;
    }
  }

 private:
  // ---- Set-up ----

  // The pairs: JSONL read whole (a .npy teacher cache is checked against them), or a corpus streamed with its own
  // teacher block; and the length of the run.
  void open_data() {
    const bool corpus_teacher = cfg_.data.teacher_cache == "corpus";
    const bool npy_teacher = !cfg_.data.teacher_cache.empty() && !corpus_teacher;
    if (!is_hdf5_file(cfg_.data.train)) {
      XV_CHECK(!corpus_teacher, "data.teacher_cache is 'corpus', but data.train ({}) is not an HDF5 corpus",
               cfg_.data.train);
      jsonl_ = read_train_data(cfg_.data.train, cfg_.data.image_root);
      src_ = make_jsonl_source(*jsonl_);
    } else {
      XV_CHECK(!npy_teacher,
               "data.teacher_cache: {} is a .npy cache, but data.train ({}) is an HDF5 corpus: set data.teacher_cache "
               "to 'corpus' and store the teacher in the corpus with `xvlm2vec corpus cache-teacher`",
               cfg_.data.teacher_cache, cfg_.data.train);
      SourceOptions so;
      so.image_root = cfg_.data.image_root;
      so.teacher = corpus_teacher;
      so.tokenizer_json = (fs::path(cfg_.model) / "tokenizer.json").string();
      src_ = open_pair_source(cfg_.data.train, so);
    }
    // A step: grad_accum micro-batches of batch_size pairs on every rank (global micro-batch j = m * W + rank).
    N_ = src_->size(), bs_ = cfg_.train.batch_size, ga_ = cfg_.train.grad_accum, GB_ = bs_ * ga_ * W_;
    total_ = cfg_.train.max_steps > 0 ? cfg_.train.max_steps : cfg_.train.epochs * N_ / GB_;
    XV_CHECK(total_ >= 1,
             "{}: {} pairs x {} epoch(s) make less than one optimizer step of train.batch_size x train.grad_accum x "
             "{} rank(s) = {} pairs: lower them, or set train.max_steps",
             src_->path(), N_, cfg_.train.epochs, W_, GB_);
  }

  // Every rank's own log (output_dir/logs/rank-NNNNN.log): what it did, and the error that stopped it.
  void open_rank_log() {
    std::error_code ec;
    fs::create_directories(fs::path(cfg_.output_dir) / "logs", ec);
    XV_CHECK(!ec, "output_dir: {}: cannot create folder: {}", cfg_.output_dir, ec.message());
    const std::string path = (fs::path(cfg_.output_dir) / "logs" / fmt::format("rank-{:05}.log", R_)).string();
    rank_log_path_ = path;
    created_log_ = !fs::exists(path, ec) || !o_.resume;
    rank_log_.f = std::fopen(path.c_str(), o_.resume ? "a" : "w");
    XV_CHECK(rank_log_.f, "{}: cannot open for writing", path);
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    rlog(fmt::format("rank {} of {} on {} (pid {}), strategy {}{}", R_, W_, host, ::getpid(), cfg_.parallel.strategy,
                     cfg_.parallel.deterministic ? ", deterministic reduction" : ""));
  }

  // A run that failed before its first step leaves nothing behind: what it made (its rank log, the lead's
  // metrics.jsonl and config.yaml, the logs folder, output_dir) goes, what was there before stays.
  void undo_outputs(bool had_out, bool had_logs) {
    std::error_code ec;
    if (rank_log_.f) std::fclose(rank_log_.f), rank_log_.f = nullptr;
    if (created_log_) fs::remove(rank_log_path_, ec);
    if (lead_ && !o_.resume)
      for (const char* f : {"metrics.jsonl", "config.yaml"})
        if (wrote_.count(f)) fs::remove(fs::path(cfg_.output_dir) / f, ec);
    if (!had_logs) fs::remove(fs::path(cfg_.output_dir) / "logs", ec);  // only when empty
    if (!had_out) fs::remove(cfg_.output_dir, ec);
  }

  void rlog(const std::string& line) {
    std::fprintf(rank_log_.f, "%s\n", line.c_str());
    std::fflush(rank_log_.f);
  }

  std::string last_checkpoint_note() const {
    return sum_.last_checkpoint.empty() ? "no checkpoint had been written yet"
                                        : "the last checkpoint, " + sum_.last_checkpoint + ", is intact";
  }

  TrainSummary train_steps() {
    resume_state();
    check_memory();
    load_model();
    shard_model();
    plan_memory();
    check_disk();
    open_metrics();
    open_stream();
    started_ = true;
    while (st_.step < total_) {
      if (o_.stop_after > 0 && st_.step - start_step_ >= o_.stop_after) break;
      step();
      log_step();
      maybe_checkpoint();
      progress_bar();
    }
    if (tty_ && !bar_.empty()) std::fputs("\n", stderr);
    sum_.steps = st_.step;
    sum_.finished = st_.step >= total_;
    if (sum_.finished) finish();
    return sum_;
  }

  // The newest step-N folder that is intact (checkpoint_problem), saying which newer ones were skipped and why;
  // "" when there are none at all. Folders that exist but none intact: refused (never a silent step 0).
  std::string resume_point(const std::string& out) {
    const IntactCheckpoint c = newest_intact_checkpoint(out);
    if (!c.dir.empty()) {
      for (const auto& s : c.skipped) {
        if (lead_) std::fprintf(stderr, "train: --resume: skipping a damaged checkpoint: %s\n", s.c_str());
        if (rank_log_.f) rlog("--resume: skipped a damaged checkpoint: " + s);
      }
      if (lead_ && !c.skipped.empty())
        std::fprintf(stderr, "train: --resume: continuing from %s, the newest intact checkpoint\n", c.dir.c_str());
      return c.dir;
    }
    if (c.skipped.empty()) return "";
    std::string list;
    for (const auto& s : c.skipped) list += "\n  " + s;
    fail("--resume: no intact checkpoint in {}/checkpoints; damaged:{}\nmove them aside to start again from step 0",
         out, list);
  }

  // Where to start: step 0, or the newest checkpoint of output_dir with --resume (after checking that it is a
  // run of this config and data).
  void resume_state() {
    st_.total_steps = total_;
    st_.num_pairs = N_;
    st_.seed = uint64_t(cfg_.seed);
    st_.data_fingerprint = src_->fingerprint();
    st_.world = W_;
    st_.grad_accum = ga_;
    const std::string& out = cfg_.output_dir;
    resume_from_ = o_.resume ? resume_point(out) : "";
    if (!o_.resume) {
      const auto prev = list_step_folders(out);
      XV_CHECK(prev.empty(), "output_dir: {} already holds checkpoints (newest {}): pass --resume to continue that "
               "run, or choose another output_dir", out, fs::path(prev.back()).filename().string());
    }
    if (lead_) remove_stale_staging(out);
    par_.world->barrier();
    if (!resume_from_.empty()) {
      const TrainState saved = read_checkpoint_state(resume_from_);
      const TrainConfig old = parse_train_config(read_checkpoint_config(resume_from_), resume_from_ + "/config.yaml");
      for (const char* key : kResumeKeys) {
        const std::string now = train_config_value(cfg_, key), then = train_config_value(old, key);
        XV_CHECK(now == then, "--resume: {} is {} here but {} in {}: a resumed run must keep it", key, now, then,
                 resume_from_);
      }
      // The world size may change (the checkpoint re-shards) as long as a step covers the same micro-batches.
      const int64_t then_ga = saved.grad_accum > 0 ? saved.grad_accum : old.train.grad_accum;
      XV_CHECK(then_ga * saved.world == ga_ * W_,
               "--resume: {} made steps of {} micro-batches (train.grad_accum {} x {} rank(s)), this run makes {} "
               "(train.grad_accum {} x {} rank(s)): keep train.grad_accum x ranks", resume_from_,
               then_ga * saved.world, then_ga, saved.world, ga_ * W_, ga_, W_);
      XV_CHECK(saved.num_pairs == N_ && saved.data_fingerprint == src_->fingerprint(),
               "--resume: {} is not the data of {} ({} pairs then, {} now, or their contents differ)", src_->path(),
               resume_from_, saved.num_pairs, N_);
      XV_CHECK(saved.total_steps == total_ && saved.seed == uint64_t(cfg_.seed),
               "--resume: {} was a run of {} steps, this one has {}", resume_from_, saved.total_steps, total_);
      st_ = saved;
      st_.world = W_;
      st_.grad_accum = ga_;
    }
    start_step_ = st_.step;
    sum_.start_step = start_step_;
    sum_.total_steps = total_;
    sum_.last_checkpoint = resume_from_;
  }

  // The model, and the teacher targets when they come from a cache. With the frozen base sharded, the model is
  // laid out without it and FrozenShards reads it unit by unit (shard_model): no rank holds the whole base.
  void load_model() {
    shard_frozen_ = par_.frozen && par_.frozen->size() > 1;
    LoadOptions lo;
    lo.device = device_;
    lo.weight_dtype = cfg_.weight_dtype();
    lo.shapes_only = shard_frozen_;
    model_ = KdModel::load(cfg_.model, cfg_.trainable, cfg_.lora_config(), uint64_t(cfg_.seed), lo);
    if (!model_->takes_images() && src_->has_images()) {
      if (jsonl_)
        for (size_t i = 0; i < jsonl_->pairs.size(); ++i)
          XV_CHECK(jsonl_->pairs[i].image.empty(), "{}: field 'image' is set, but the {} backbone takes text only",
                   jsonl_->where(i), model_->arch());
      fail("{}: the corpus has pairs with images, but the {} backbone takes text only", src_->path(), model_->arch());
    }
    D_ = model_->dim();
    if (!cfg_.data.teacher_cache.empty() && cfg_.data.teacher_cache != "corpus")
      teacher_ = load_teacher_cache(cfg_.data.teacher_cache, cfg_.model, *jsonl_, D_);
    if (cfg_.data.teacher_cache == "corpus") {
      const std::string want = model_fingerprint(cfg_.model), got = corpus_teacher_model(*src_);
      XV_CHECK(got == want,
               "{}: the corpus's /teacher block was computed by another model ({}; {} is {}): run `xvlm2vec corpus "
               "cache-teacher --model {} {}` again",
               src_->path(), got, cfg_.model, want, cfg_.model, src_->path());
    }
  }

  // The bytes of the model's weight files (what loading it reads, and about what a merged export writes).
  uint64_t model_file_bytes() const {
    uint64_t n = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(cfg_.model, ec))
      if (e.path().extension() == ".safetensors" && e.is_regular_file(ec)) n += uint64_t(e.file_size(ec));
    return n;
  }

  // Before the model loads: its frozen weights must fit in the memory this process can have (at least: the files'
  // size, halved in bf16 from f32 files, split over the shard group; activations and the optimizer come on top).
  void check_memory() {
    const int64_t group = par_.frozen ? std::max<int64_t>(1, par_.frozen->size()) : 1;
    uint64_t need = model_file_bytes() / uint64_t(group);
    if (cfg_.weight_dtype() == DType::BF16) need /= 2;
    require_memory(need, fmt::format("model: {} (its weights{}{})", cfg_.model,
                                     group > 1 ? fmt::format(", sharded over {} ranks", group) : "",
                                     cfg_.weight_dtype() == DType::BF16 ? ", in bf16" : ""),
                   cfg_.weight_dtype() == DType::BF16 ? ": use more ranks, or a machine with more memory"
                                                      : ": use model.weight_dtype: bf16, more ranks, or a machine "
                                                        "with more memory");
  }

  // Before the first step: what the loaded model and optimizer hold (measured) and what a step adds (estimated
  // for the longest pairs of the data), printed, and refused when it cannot fit (train/memory_plan.h).
  void plan_memory() {
    MemoryPlan p;
    p.device = device_.str();
    p.held = storage_live_bytes(device_.kind);
    p.frozen = uint64_t(frozen_ ? frozen_->resident_bytes() : widened_ ? widened_->resident_bytes() : 0);
    const uint64_t P = uint64_t(shards_->size()), padded = uint64_t(shards_->padded());
    const uint64_t owned = uint64_t(shards_->own_end() - shards_->own_begin());
    const uint64_t ga = uint64_t(ga_);
    p.trainable = 4 * (2 * P + 2 * owned) + (cfg_.parallel.deterministic ? 4 * ga * padded : 0);
    if (!frozen_ && !widened_) p.frozen = p.held > p.trainable ? p.held - p.trainable : 0;  // the model holds it
    p.step = 4 * (cfg_.parallel.deterministic ? 2 * ga * padded + padded : 2 * padded + owned);
    const uint64_t wide = 4 * uint64_t(largest_unit_);
    const uint64_t at_once = cfg_.parallel.prefetch ? 2 : 1;
    if (frozen_) p.gathered = at_once * uint64_t(largest_unit_bytes_) + (cfg_.weight_dtype() != DType::F32 ? wide : 0);
    else if (widened_) p.gathered = at_once * wide;
    p.shape = activation_shape();
    p.activations = model_->activation_bytes(p.shape);
    MemoryPlanSettings ms;
    ms.batch_size = bs_;
    ms.checkpointing = cfg_.train.checkpointing;
    ms.bf16_weights = cfg_.weight_dtype() == DType::BF16;
    ms.sharded = shard_frozen_;
    if (device_.is_cpu()) check_memory_plan(p, available_memory(), ms);
    const std::string line = format_memory_plan(p);
    rlog(line);
    if (lead_ && !o_.quiet) std::fprintf(stderr, "train: %s\n", line.c_str());
  }

  // The micro-batch the plan sizes: batch_size pairs as long as the longest of the data (in tokens, measured on
  // the kLongest pairs with the most bytes), with as many image crops as the most any of those had, each.
  ActivationShape activation_shape() {
    constexpr size_t kLongest = 16;
    std::vector<std::pair<int64_t, int64_t>> by_length;  // (bytes, pair)
    by_length.reserve(size_t(N_));
    for (int64_t i = 0; i < N_; ++i) by_length.emplace_back(src_->length(i), i);
    const size_t k = std::min(kLongest, by_length.size());
    std::partial_sort(by_length.begin(), by_length.begin() + ptrdiff_t(k), by_length.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    std::vector<int64_t> idx;
    for (size_t i = 0; i < k; ++i) idx.push_back(by_length[i].second);
    ActivationShape s;
    s.batch = bs_;
    s.checkpointing = cfg_.train.checkpointing;
    s.teacher_cache = !cfg_.data.teacher_cache.empty();
    s.image_prefix_loss = cfg_.train.image_prefix_loss;
    int64_t crops = 0;
    for (TrainPair& pair : src_->fetch(idx)) {
      const PreparedSize z = model_->prepared_size(*model_->prepare(pair));
      s.tokens = std::max(s.tokens, z.tokens);
      crops = std::max(crops, z.crops);
    }
    s.crops = crops * bs_;
    return s;
  }

  // Before the first step: room on disk for the checkpoints this run keeps (at most checkpoint.keep + 1 at once:
  // a new one is written before the oldest goes; 12 bytes per trainable parameter, the values and two Adam
  // moments) and its exports.
  void check_disk() {
    if (!lead_) return;
    const uint64_t P = uint64_t(n_trainable_);
    const int64_t every = cfg_.checkpoint.every_steps;
    const int64_t written = every > 0 ? (total_ - st_.step) / every + 1 : 1;
    const int64_t copies = std::min<int64_t>(written, resume_from_.empty() ? cfg_.checkpoint.keep + 1 : 1);
    uint64_t need = 12 * P * uint64_t(std::max<int64_t>(copies, 1));
    if (cfg_.export_.adapter && cfg_.trainable == "lora") need += 4 * P;
    if (cfg_.export_.merged || cfg_.trainable == "full") need += model_file_bytes();
    require_disk(cfg_.output_dir, need,
                 fmt::format("output_dir: this run ({} checkpoint(s) of {} trainable parameters and the export)", copies,
                             P),
                 ": free some space, lower checkpoint.keep, or choose another output_dir");
  }

  // The frozen base, sharded over the shard group (full, hybrid) or, in bf16 on one process, widened a unit at a
  // time; the trainable tensors in flat buffers (sharded or replicated), from the checkpoint when resuming.
  void shard_model() {
    UnitOptions uo;
    uo.vision_layers_per_unit = cfg_.parallel.vision_layers_per_unit;
    std::vector<WeightUnit> units = model_->frozen_units(uo);
    for (const WeightUnit& u : units) {  // the largest unit, for the memory plan
      int64_t n = 0, bytes = 0;
      for (const Tensor* t : u.tensors) n += t->numel(), bytes += t->numel() * int64_t(dtype_size(t->dtype()));
      largest_unit_ = std::max(largest_unit_, n);
      largest_unit_bytes_ = std::max(largest_unit_bytes_, bytes);
    }
    if (shard_frozen_) {
      frozen_ = std::make_unique<par::FrozenShards>(*par_.frozen, std::move(units), cfg_.parallel.prefetch);
      model_->set_unit_access(frozen_.get());
    } else if (cfg_.weight_dtype() != DType::F32) {
      widened_ = std::make_unique<WidenedUnits>(std::move(units));
      model_->set_unit_access(widened_.get());
    }
    const std::vector<TrainableTensor> trainable = model_->trainable();
    if (!resume_from_.empty()) load_checkpoint(resume_from_, trainable);
    par::TrainableOptions to;
    to.world = par_.grads ? par_.grads.get() : par_.world;
    to.group = par_.group.get();
    to.across = par_.across.get();
    to.deterministic = cfg_.parallel.deterministic;
    to.grad_accum = ga_;
    shards_ = std::make_unique<par::TrainableShards>(trainable, cfg_.adamw_config(), to);
    if (!resume_from_.empty()) par::load_sharded_optimizer(resume_from_, *shards_);
    for (const auto& t : trainable) n_trainable_ += t.value->numel();
    const int64_t frozen_bytes = frozen_ ? frozen_->resident_bytes() : widened_ ? widened_->resident_bytes() : 0;
    rlog(fmt::format("frozen base: {} units, {:.1f} MB held by this rank ({}); trainable: {} parameters, elements "
                     "[{}, {}) of {} owned by this rank",
                     frozen_ ? frozen_->units() : widened_ ? widened_->units() : 0, double(frozen_bytes) / 1048576.0,
                     cfg_.model_weight_dtype, n_trainable_, shards_->own_begin(), shards_->own_end(),
                     shards_->padded()));
  }

  // metrics.jsonl (truncated to the checkpoint's step when resuming) and config.yaml; the run's headline.
  void open_metrics() {
    metrics_path_ = (fs::path(cfg_.output_dir) / "metrics.jsonl").string();
    if (lead_) {
      if (resume_from_.empty()) write_file_atomic(metrics_path_, ""), wrote_.insert("metrics.jsonl");
      else truncate_metrics(metrics_path_, st_.step);
      write_file_atomic((fs::path(cfg_.output_dir) / "config.yaml").string(), config_yaml_);
      wrote_.insert("config.yaml");
      metrics_.f = std::fopen(metrics_path_.c_str(), "a");
      XV_CHECK(metrics_.f, "{}: cannot open for appending", metrics_path_);
    }
    term_ = !o_.quiet && lead_, tty_ = term_ && ::isatty(2);
    if (term_ && !src_->note().empty()) std::fprintf(stderr, "train: note: %s\n", src_->note().c_str());
    if (term_ && o_.resume && resume_from_.empty())
      std::fprintf(stderr, "train: --resume: no checkpoint in %s/checkpoints yet, starting from step 0\n",
                   cfg_.output_dir.c_str());
    if (term_)
      std::fprintf(stderr, "train: %s, %lld pairs, %lld trainable parameters, %lld steps of %lld x %lld pairs%s%s\n",
                   model_->arch().c_str(), static_cast<long long>(N_), static_cast<long long>(n_trainable_),
                   static_cast<long long>(total_), static_cast<long long>(bs_), static_cast<long long>(ga_),
                   W_ > 1 ? fmt::format(" x {} ranks ({})", W_, cfg_.parallel.strategy).c_str() : "",
                   resume_from_.empty() ? "" : fmt::format(", resumed from {}", resume_from_).c_str());
  }

  // The pairs, read and prepared ahead (data/corpus_stream.h) from the checkpoint's position; this rank reads
  // blocks R, R + W, ... of batch_size pairs of the global stream.
  void open_stream() {
    StreamOptions so;
    so.seed = uint64_t(cfg_.seed);
    so.rank = R_;
    so.world = W_;
    so.block = bs_;
    so.workers = int(cfg_.data.workers);
    so.prefetch = cfg_.data.prefetch;
    so.bucket_window = cfg_.data.bucket_window;
    so.bucket_batch = bs_;
    const KdModel* prep_model = model_.get();
    so.prepare = [prep_model](const TrainPair& p) { return prep_model->prepare(p); };
    stream_ = std::make_unique<PairStream>(src_, so, StreamPosition{st_.epoch, st_.index});
    t_loop_ = t_log_ = Clock::now();
    bytes_log_ = comm_bytes();
    wait_log_ = comm_wait();
  }

  // ---- A step ----

  std::string where_list(const std::vector<int64_t>& idx) const {
    std::string s;
    for (size_t i = 0; i < idx.size(); ++i) s += (i ? ", " : "") + src_->where(idx[i]);
    return s;
  }

  // The teacher targets of a micro-batch (B, D): rows of the .npy cache by the pairs' indices, or the corpus's
  // teacher block that came with each pair.
  Tensor teacher_targets(const std::vector<TrainPair>& batch, const std::vector<int64_t>& idx) const {
    if (!teacher_.empty()) {
      Tensor out({bs_, D_});
      ops::gather_rows(teacher_, View{}, Tensor::indices(std::vector<int32_t>(idx.begin(), idx.end())), out);
      return out;
    }
    std::vector<float> t(static_cast<size_t>(bs_ * D_));
    for (int64_t i = 0; i < bs_; ++i) {
      const auto& row = batch[size_t(i)].teacher_en;
      XV_CHECK(int64_t(row.size()) == D_, "{}: the teacher block has dimension {}, the model {}",
               src_->where(idx[size_t(i)]), row.size(), D_);
      std::copy(row.begin(), row.end(), t.begin() + i * D_);
    }
    return Tensor::from_vector({bs_, D_}, t);
  }

  // grad_accum micro-batches (forward and backward each), the step's loss terms over every rank, then the
  // reduction, clipping and AdamW (TrainableShards::step).
  void step() {
    model_->zero_grad();
    std::vector<double> terms_mine(size_t(ga_ * 5));  // (ga, 5) this rank's micro-batches
    for (int64_t m = 0; m < ga_; ++m) {
      std::vector<int64_t> idx;
      std::vector<TrainPair> batch;
      for (int64_t i = 0; i < bs_; ++i) {
        batch.push_back(stream_->next());
        idx.push_back(batch.back().index);
      }
      Tensor t_en;
      KdStepOptions ko;
      ko.loss_scale = 1.0f / float(ga_ * W_);
      ko.dropout_seed = micro_batch_seed(uint64_t(cfg_.seed), st_.step, m * W_ + R_);  // the global micro-batch
      ko.checkpointing = cfg_.train.checkpointing;
      ko.image_prefix_loss = cfg_.train.image_prefix_loss;
      ko.vision_units = frozen_ && src_->has_images();  // every rank gathers the tower's units (phi3_v)
      if (!teacher_.empty() || cfg_.data.teacher_cache == "corpus") {
        t_en = teacher_targets(batch, idx);
        ko.teacher_en = &t_en;
      }
      KdLossTerms t;
      try {
        t = model_->forward_backward(batch, ko);
      } catch (const Error& e) {
        fail("step {}, micro-batch {} ({}): {}", st_.step + 1, m * W_ + R_ + 1, where_list(idx), e.what());
      }
      const double v[5] = {t.loss_en, t.loss_xx, t.prefix_en, t.prefix_xx, t.loss};
      for (int k = 0; k < 5; ++k) {
        XV_CHECK(std::isfinite(v[k]), "step {}: loss term '{}' is {} (micro-batch {}, {}); training stopped: {}",
                 st_.step + 1, kTerms[k], nonfinite(v[k]), m * W_ + R_ + 1, where_list(idx), last_checkpoint_note());
        terms_mine[size_t(m * 5 + k)] = v[k];
      }
      if (cfg_.parallel.deterministic) {
        shards_->take_micro_batch(m);
        model_->zero_grad();
      }
    }
    st_.epoch = stream_->position().epoch, st_.index = stream_->position().index;
    // The step's terms: the mean over every rank's micro-batches, summed in global order.
    std::vector<double> terms_all(size_t(W_ * ga_ * 5));
    par_.world->all_gather(terms_mine.data(), terms_all.data(), terms_mine.size(), DType::F64);
    KdLossTerms acc;
    double* accs[5] = {&acc.loss_en, &acc.loss_xx, &acc.prefix_en, &acc.prefix_xx, &acc.loss};
    for (int64_t j = 0; j < W_ * ga_; ++j)
      for (int k = 0; k < 5; ++k) *accs[k] += terms_all[size_t(((j % W_) * ga_ + j / W_) * 5 + k)];
    for (double* v : accs) *v /= double(ga_ * W_);
    lr_ = cfg_.train.lr * lr_lambda(cfg_.train.schedule, st_.step, cfg_.train.warmup_steps, total_);
    norm_ = shards_->step(float(lr_), cfg_.train.max_grad_norm);
    XV_CHECK(std::isfinite(norm_), "step {}: the gradient norm is {}; training stopped: {}", st_.step + 1,
             nonfinite(norm_), last_checkpoint_note());
    ++st_.step;
    ++steps_since_log_;
    sum_.last = acc;
  }

  // ---- Logging, checkpoints, the end ----

  // Communication per step (docs/distributed.md): bytes this rank received, from the communicators' counters.
  std::array<uint64_t, 3> comm_bytes() const {
    std::array<uint64_t, 3> b{};  // frozen base gathered, gradients reduced, parameters gathered
    if (par_.frozen) b[0] = par_.frozen->stats().all_gather_bytes;
    for (par::Communicator* c : {par_.grads.get(), par_.group.get(), par_.across.get()}) {
      if (!c) continue;
      const par::CommStats& x = c->stats();
      b[1] += x.reduce_scatter_bytes + x.all_reduce_bytes + x.all_to_all_bytes;
      b[2] += x.all_gather_bytes;
    }
    return b;
  }
  double comm_wait() const {
    double w = 0;
    for (par::Communicator* c : {par_.frozen.get(), par_.grads.get(), par_.group.get(), par_.across.get()})
      if (c) w += c->stats().wait_s;
    return w;
  }

  double eta(Clock::time_point now) const {
    return seconds(t_loop_, now) / double(st_.step - start_step_) * double(total_ - st_.step);
  }

  // A line of metrics.jsonl, the rank log and the terminal, every log.every_steps steps and at the end.
  void log_step() {
    if (st_.step % cfg_.log.every_steps != 0 && st_.step != total_) return;
    const auto now = Clock::now();
    const KdLossTerms& acc = sum_.last;
    const double dt = seconds(t_log_, now);
    const double pps = dt > 0 ? double(steps_since_log_ * GB_) / dt : 0.0;
    const auto bytes = comm_bytes();
    const double wait = comm_wait();
    nlohmann::ordered_json j;
    j["step"] = st_.step;
    j["epoch"] = (double(st_.epoch) * double(N_) + double(st_.index)) / double(N_);
    j["loss"] = acc.loss;
    j["loss_en"] = acc.loss_en;
    j["loss_xx"] = acc.loss_xx;
    if (cfg_.train.image_prefix_loss) {
      j["prefix_en"] = acc.prefix_en;
      j["prefix_xx"] = acc.prefix_xx;
    }
    j["lr"] = lr_;
    j["grad_norm"] = norm_;
    if (W_ > 1) {
      // Bytes this rank received per step (the same on every rank; docs/distributed.md gives the formula).
      j["world"] = W_;
      j["comm_frozen_bytes"] = (bytes[0] - bytes_log_[0]) / uint64_t(steps_since_log_);
      j["comm_grad_bytes"] = (bytes[1] - bytes_log_[1]) / uint64_t(steps_since_log_);
      j["comm_param_bytes"] = (bytes[2] - bytes_log_[2]) / uint64_t(steps_since_log_);
    }
    // Timing and memory: these differ from run to run.
    j["pairs_per_s"] = pps;
    j["elapsed_s"] = seconds(t_start_, now);
    j["peak_rss_mb"] = peak_rss_mb();
    if (W_ > 1) {
      j["comm_wait_s"] = (wait - wait_log_) / double(steps_since_log_);  // communication not hidden by compute
      j["frozen_resident_mb"] = frozen_ ? double(frozen_->resident_bytes()) / 1048576.0 : 0.0;
      j["frozen_peak_gathered_mb"] = frozen_ ? double(frozen_->peak_gathered_bytes()) / 1048576.0 : 0.0;
      j["rss_mb"] = current_rss_mb();
    }
    const std::string line = j.dump() + "\n";
    if (lead_)
      XV_CHECK(std::fputs(line.c_str(), metrics_.f) >= 0 && std::fflush(metrics_.f) == 0, "{}: write failed",
               metrics_path_);
    std::string msg = fmt::format("step {}/{}  loss {:.4e} (en {:.4e}, xx {:.4e}", st_.step, total_, acc.loss,
                                  acc.loss_en, acc.loss_xx);
    if (cfg_.train.image_prefix_loss)
      msg += fmt::format(", prefix en {:.4e}, xx {:.4e}", acc.prefix_en, acc.prefix_xx);
    msg += fmt::format(")  lr {:.3e}  grad {:.3e}  {:.1f} pairs/s  rss {:.0f} MB  eta {}", lr_, norm_, pps,
                       peak_rss_mb(), hms(eta(now)));
    rlog(msg);
    if (term_) std::fprintf(stderr, "%s%s\n", tty_ ? "\r\x1b[K" : "", msg.c_str());
    t_log_ = now;
    steps_since_log_ = 0;
    bytes_log_ = bytes;
    wait_log_ = wait;
  }

  // Every checkpoint.every_steps steps and at the end: written by every rank together, sharded.
  void maybe_checkpoint() {
    if (!((cfg_.checkpoint.every_steps > 0 && st_.step % cfg_.checkpoint.every_steps == 0) || st_.step == total_))
      return;
    sum_.last_checkpoint = par::save_sharded_checkpoint(
        *par_.world, cfg_.output_dir, st_.step, *shards_,
        {{"config.yaml", config_yaml_}, {"state.json", checkpoint_state_json(st_, shards_->adamw_steps())}},
        cfg_.checkpoint.keep);
    rlog("checkpoint " + sum_.last_checkpoint);
    bytes_log_ = comm_bytes();  // (the checkpoint's own traffic is not a step's)
  }

  void progress_bar() {
    if (!tty_) return;
    const int width = 30, fill = int(double(width) * double(st_.step) / double(total_));
    bar_ = fmt::format("\r\x1b[K[{}{}] {}/{}  loss {:.4e}  lr {:.2e}  ETA {}", std::string(size_t(fill), '#'),
                       std::string(size_t(width - fill), '.'), st_.step, total_, sum_.last.loss, lr_,
                       hms(eta(Clock::now())));
    std::fputs(bar_.c_str(), stderr);
    std::fflush(stderr);
  }

  // The exports (rank 0): the PEFT adapter and/or the merged model; full fine-tuning has no adapter, its export
  // is the merged (whole) model.
  void finish() {
    const std::string& out = cfg_.output_dir;
    if (lead_) {
      if (cfg_.export_.adapter && cfg_.trainable == "lora") model_->save_adapter((fs::path(out) / "adapter").string());
      if (cfg_.export_.merged || cfg_.trainable == "full") model_->save_merged((fs::path(out) / "merged").string());
    }
    par_.world->barrier();
    rlog(fmt::format("done: {} steps", st_.step));
    if (term_)
      std::fprintf(stderr, "train: %lld steps done in %s; checkpoint %s%s%s\n", static_cast<long long>(st_.step),
                   hms(seconds(t_start_, Clock::now())).c_str(), sum_.last_checkpoint.c_str(),
                   cfg_.export_.adapter ? fmt::format("; adapter {}/adapter", out).c_str() : "",
                   cfg_.export_.merged ? fmt::format("; merged model {}/merged", out).c_str() : "");
  }

  const Clock::time_point t_start_;
  const TrainOptions o_;
  const TrainConfig cfg_;
  const std::string config_yaml_;
  const Device device_ = Device::cpu();  // where the model lives (training on a GPU is not wired yet)
  ParallelPlan par_;
  int64_t W_ = 1, R_ = 0;
  bool lead_ = true;
  // The data and the run's length.
  std::optional<TrainData> jsonl_;
  std::shared_ptr<PairSource> src_;
  int64_t N_ = 0, bs_ = 0, ga_ = 0, GB_ = 0, total_ = 0;
  FileCloser rank_log_, metrics_;
  std::string metrics_path_;
  // Where the run is.
  TrainState st_;
  std::string resume_from_;
  // What this run made before its first step (undo_outputs removes it when it never gets there).
  bool started_ = false, created_log_ = false;
  std::string rank_log_path_;
  std::set<std::string> wrote_;
  int64_t start_step_ = 0;
  TrainSummary sum_;
  // The model and its shards.
  std::unique_ptr<KdModel> model_;
  bool shard_frozen_ = false;
  int64_t D_ = 0, n_trainable_ = 0;
  int64_t largest_unit_ = 0, largest_unit_bytes_ = 0;  // elements and stored bytes of the largest frozen unit
  Tensor teacher_;  // (N, D) from a .npy teacher cache, on the host
  std::unique_ptr<par::FrozenShards> frozen_;
  std::unique_ptr<WidenedUnits> widened_;
  std::unique_ptr<par::TrainableShards> shards_;
  std::unique_ptr<PairStream> stream_;
  // The last step's numbers and the logging state.
  double lr_ = 0, norm_ = 0;
  bool term_ = false, tty_ = false;
  std::string bar_;
  Clock::time_point t_loop_, t_log_;
  int64_t steps_since_log_ = 0;
  std::array<uint64_t, 3> bytes_log_{};
  double wait_log_ = 0;
};

}  // namespace

TrainConfig resolve_train_config(const TrainConfig& in) {
  TrainConfig c = in;
  for (std::string* p : {&c.model, &c.data.train, &c.data.image_root, &c.data.teacher_cache, &c.output_dir})
    if (!p->empty() && !(p == &c.data.teacher_cache && *p == "corpus")) *p = fs::absolute(*p).lexically_normal().string();
  require_dir(c.model, "model folder");
  if (c.lora.targets.empty()) c.lora.targets = default_lora_targets(read_model_type(c.model + "/config.json"));
  return c;
}

TrainSummary train(const TrainConfig& cfg, const TrainOptions& o) { return TrainRun(cfg, o).run(); }

}  // namespace xv
