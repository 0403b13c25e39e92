#include "core/trainer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/model_config.h"
#include "core/optimizer.h"
#include "core/teacher_cache.h"
#include "core/train_data.h"
#include "data/corpus_stream.h"
#include "kernels/ops.h"

namespace xv {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Keys a resumed run must share with its checkpoint: they change what is computed. Paths may move, and
// threads, activation checkpointing, logging, checkpointing and export do not change the numbers.
const char* kResumeKeys[] = {"seed",          "trainable",          "lora.r",
                             "lora.alpha",    "lora.dropout",       "lora.targets",
                             "lora.init",     "lora.rslora",        "train.epochs",
                             "train.max_steps", "train.batch_size", "train.grad_accum",
                             "train.lr",      "train.schedule",     "train.warmup_steps",
                             "train.weight_decay", "train.betas",   "train.eps",
                             "train.max_grad_norm", "train.image_prefix_loss", "data.bucket_window"};

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

void remove_stale_staging(const std::string& output_dir) {
  const fs::path root = fs::path(output_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (!n.empty() && n[0] == '.' && n.find(".tmp.") != std::string::npos) fs::remove_all(e.path(), ec);
  }
}

}  // namespace

TrainConfig resolve_train_config(const TrainConfig& in) {
  TrainConfig c = in;
  for (std::string* p : {&c.model, &c.data.train, &c.data.image_root, &c.data.teacher_cache, &c.output_dir})
    if (!p->empty() && !(p == &c.data.teacher_cache && *p == "corpus")) *p = fs::absolute(*p).lexically_normal().string();
  XV_CHECK(fs::is_directory(c.model), "model: {}: model folder does not exist", c.model);
  if (c.lora.targets.empty()) c.lora.targets = default_lora_targets(read_model_type(c.model + "/config.json"));
  return c;
}

TrainSummary train(const TrainConfig& cfg_in, const TrainOptions& o) {
  const auto t_start = Clock::now();
  const TrainConfig cfg = resolve_train_config(cfg_in);
  if (cfg.train.threads > 0) ops::set_num_threads(int(cfg.train.threads));
  const std::string config_yaml = train_config_yaml(cfg);
  const bool corpus_teacher = cfg.data.teacher_cache == "corpus";
  const bool npy_teacher = !cfg.data.teacher_cache.empty() && !corpus_teacher;
  // JSONL pairs are read whole (a .npy teacher cache is checked against them); a corpus is streamed and
  // carries its own teacher block.
  std::optional<TrainData> jsonl;
  std::shared_ptr<PairSource> src;
  if (!is_hdf5_file(cfg.data.train)) {
    XV_CHECK(!corpus_teacher, "data.teacher_cache is 'corpus', but data.train ({}) is not an HDF5 corpus",
             cfg.data.train);
    jsonl = read_train_data(cfg.data.train, cfg.data.image_root);
    src = make_jsonl_source(*jsonl);
  } else {
    XV_CHECK(!npy_teacher,
             "data.teacher_cache: {} is a .npy cache, but data.train ({}) is an HDF5 corpus: set data.teacher_cache to "
             "'corpus' and store the teacher in the corpus with `xvlm2vec corpus cache-teacher`",
             cfg.data.teacher_cache, cfg.data.train);
    SourceOptions so;
    so.image_root = cfg.data.image_root;
    so.teacher = corpus_teacher;
    so.tokenizer_json = (fs::path(cfg.model) / "tokenizer.json").string();
    src = open_pair_source(cfg.data.train, so);
  }
  const int64_t N = src->size(), bs = cfg.train.batch_size, ga = cfg.train.grad_accum;
  const int64_t total = cfg.train.max_steps > 0 ? cfg.train.max_steps : cfg.train.epochs * N / (bs * ga);
  XV_CHECK(total >= 1,
           "{}: {} pairs x {} epoch(s) make less than one optimizer step of train.batch_size x train.grad_accum = {} "
           "pairs: lower them, or set train.max_steps",
           src->path(), N, cfg.train.epochs, bs * ga);
  const uint64_t seed = uint64_t(cfg.seed);
  const std::string& out = cfg.output_dir;
  std::error_code ec;
  fs::create_directories(out, ec);
  XV_CHECK(!ec, "output_dir: {}: cannot create folder: {}", out, ec.message());

  // Where to start.
  TrainState st;
  st.total_steps = total;
  st.num_pairs = N;
  st.seed = seed;
  st.data_fingerprint = src->fingerprint();
  const std::string resume_from = o.resume ? latest_checkpoint(out) : "";
  if (!o.resume) {
    const std::string prev = latest_checkpoint(out);
    XV_CHECK(prev.empty(), "output_dir: {} already holds checkpoints (newest {}): pass --resume to continue that run, "
             "or choose another output_dir", out, fs::path(prev).filename().string());
  }
  remove_stale_staging(out);
  if (!resume_from.empty()) {
    const TrainState saved = read_checkpoint_state(resume_from);
    const TrainConfig old = parse_train_config(read_checkpoint_config(resume_from), resume_from + "/config.yaml");
    for (const char* key : kResumeKeys) {
      const std::string now = train_config_value(cfg, key), then = train_config_value(old, key);
      XV_CHECK(now == then, "--resume: {} is {} here but {} in {}: a resumed run must keep it", key, now, then,
               resume_from);
    }
    XV_CHECK(saved.num_pairs == N && saved.data_fingerprint == src->fingerprint(),
             "--resume: {} is not the data of {} ({} pairs then, {} now, or their contents differ)", src->path(),
             resume_from, saved.num_pairs, N);
    XV_CHECK(saved.total_steps == total && saved.seed == seed, "--resume: {} was a run of {} steps, this one has {}",
             resume_from, saved.total_steps, total);
    st = saved;
  }
  const int64_t start_step = st.step;

  auto model = KdModel::load(cfg.model, cfg.trainable, cfg.lora_config(), seed);
  if (model->arch() == "bert" && src->has_images()) {
    if (jsonl) {
      for (size_t i = 0; i < jsonl->pairs.size(); ++i)
        XV_CHECK(jsonl->pairs[i].image.empty(), "{}: field 'image' is set, but the bert backbone takes text only",
                 jsonl->where(i));
    }
    fail("{}: the corpus has pairs with images, but the bert backbone takes text only", src->path());
  }
  Tensor teacher;
  if (npy_teacher) teacher = load_teacher_cache(cfg.data.teacher_cache, cfg.model, *jsonl, model->dim());
  if (corpus_teacher) {
    const std::string want = model_fingerprint(cfg.model), got = corpus_teacher_model(*src);
    XV_CHECK(got == want,
             "{}: the corpus's /teacher block was computed by another model ({}; {} is {}): run `xvlm2vec corpus "
             "cache-teacher --model {} {}` again",
             src->path(), got, cfg.model, want, cfg.model, src->path());
  }
  const int64_t D = model->dim();

  const std::vector<TrainableTensor> trainable = model->trainable();
  std::vector<std::pair<Tensor*, Tensor*>> params;
  std::vector<Tensor*> grads;
  int64_t n_trainable = 0;
  for (const auto& t : trainable) {
    params.push_back({t.value, t.grad});
    grads.push_back(t.grad);
    n_trainable += t.value->numel();
  }
  AdamW adamw(params, cfg.adamw_config());
  if (!resume_from.empty()) load_checkpoint(resume_from, trainable, &adamw);

  const std::string metrics_path = (fs::path(out) / "metrics.jsonl").string();
  if (resume_from.empty()) write_file_atomic(metrics_path, "");
  else truncate_metrics(metrics_path, st.step);
  write_file_atomic((fs::path(out) / "config.yaml").string(), config_yaml);
  std::FILE* metrics = std::fopen(metrics_path.c_str(), "a");
  XV_CHECK(metrics, "{}: cannot open for appending", metrics_path);
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{metrics};

  const bool term = !o.quiet, tty = term && ::isatty(2);
  if (term && !src->note().empty()) std::fprintf(stderr, "train: note: %s\n", src->note().c_str());
  if (term && o.resume && resume_from.empty())
    std::fprintf(stderr, "train: --resume: no checkpoint in %s/checkpoints yet, starting from step 0\n", out.c_str());
  if (term)
    std::fprintf(stderr, "train: %s, %lld pairs, %lld trainable parameters, %lld steps of %lld x %lld pairs%s\n",
                 model->arch().c_str(), static_cast<long long>(N), static_cast<long long>(n_trainable),
                 static_cast<long long>(total), static_cast<long long>(bs), static_cast<long long>(ga),
                 resume_from.empty() ? "" : fmt::format(", resumed from {}", resume_from).c_str());

  // The pairs, read and prepared ahead (data/corpus_stream.h) from the checkpoint's position.
  StreamOptions so;
  so.seed = seed;
  so.workers = int(cfg.data.workers);
  so.prefetch = cfg.data.prefetch;
  so.bucket_window = cfg.data.bucket_window;
  so.bucket_batch = bs;
  const KdModel* prep_model = model.get();
  so.prepare = [prep_model](const TrainPair& p) { return prep_model->prepare(p); };
  PairStream stream(src, so, StreamPosition{st.epoch, st.index});
  auto where_list = [&](const std::vector<int64_t>& idx) {
    std::string s;
    for (size_t i = 0; i < idx.size(); ++i) s += (i ? ", " : "") + src->where(idx[i]);
    return s;
  };

  TrainSummary sum;
  sum.start_step = start_step;
  sum.total_steps = total;
  sum.last_checkpoint = resume_from;
  const auto t_loop = Clock::now();
  auto t_log = t_loop;
  int64_t steps_since_log = 0;
  std::string bar;
  while (st.step < total) {
    if (o.stop_after > 0 && st.step - start_step >= o.stop_after) break;
    model->zero_grad();
    KdLossTerms acc;
    for (int64_t m = 0; m < ga; ++m) {
      std::vector<int64_t> idx;
      std::vector<TrainPair> batch;
      for (int64_t i = 0; i < bs; ++i) {
        batch.push_back(stream.next());
        idx.push_back(batch.back().index);
      }
      const StreamPosition pos = stream.position();
      st.epoch = pos.epoch, st.index = pos.index;
      Tensor t_en;
      KdStepOptions ko;
      ko.loss_scale = 1.0f / float(ga);
      ko.dropout_seed = micro_batch_seed(seed, st.step, m);
      ko.checkpointing = cfg.train.checkpointing;
      ko.image_prefix_loss = cfg.train.image_prefix_loss;
      if (!teacher.empty() || corpus_teacher) {
        t_en = Tensor({bs, D});
        for (int64_t i = 0; i < bs; ++i) {
          const auto& row = batch[size_t(i)].teacher_en;  // corpus teacher block
          XV_CHECK(!teacher.empty() || int64_t(row.size()) == D, "{}: the teacher block has dimension {}, the model {}",
                   src->where(idx[size_t(i)]), row.size(), D);
          std::copy_n(teacher.empty() ? row.data() : teacher.ptr() + idx[size_t(i)] * D, D, t_en.ptr() + i * D);
        }
        ko.teacher_en = &t_en;
      }
      KdLossTerms t;
      try {
        t = model->forward_backward(batch, ko);
      } catch (const Error& e) {
        fail("step {}, micro-batch {} ({}): {}", st.step + 1, m + 1, where_list(idx), e.what());
      }
      const std::pair<const char*, double> terms[] = {{"loss_en", t.loss_en},
                                                      {"loss_xx", t.loss_xx},
                                                      {"prefix_en", t.prefix_en},
                                                      {"prefix_xx", t.prefix_xx},
                                                      {"loss", t.loss}};
      for (const auto& [name, v] : terms)
        XV_CHECK(std::isfinite(v),
                 "step {}: loss term '{}' is {} (micro-batch {}, {}); training stopped: {}", st.step + 1, name, nonfinite(v),
                 m + 1, where_list(idx),
                 sum.last_checkpoint.empty() ? "no checkpoint had been written yet"
                                             : "the last checkpoint, " + sum.last_checkpoint + ", is intact");
      acc.loss += t.loss, acc.loss_en += t.loss_en, acc.loss_xx += t.loss_xx;
      acc.prefix_en += t.prefix_en, acc.prefix_xx += t.prefix_xx;
    }
    for (double* v : {&acc.loss, &acc.loss_en, &acc.loss_xx, &acc.prefix_en, &acc.prefix_xx}) *v /= double(ga);
    const double norm = clip_grad_norm(grads, cfg.train.max_grad_norm);
    XV_CHECK(std::isfinite(norm), "step {}: the gradient norm is {}; training stopped: {}", st.step + 1, nonfinite(norm),
             sum.last_checkpoint.empty() ? "no checkpoint had been written yet"
                                         : "the last checkpoint, " + sum.last_checkpoint + ", is intact");
    const double lr = cfg.train.lr * lr_lambda(cfg.train.schedule, st.step, cfg.train.warmup_steps, total);
    adamw.step(float(lr));
    ++st.step;
    ++steps_since_log;
    sum.last = acc;

    const auto now = Clock::now();
    const double run_s = std::chrono::duration<double>(now - t_loop).count();
    const double eta = run_s / double(st.step - start_step) * double(total - st.step);
    if (st.step % cfg.log.every_steps == 0 || st.step == total) {
      const double dt = std::chrono::duration<double>(now - t_log).count();
      const double pps = dt > 0 ? double(steps_since_log * bs * ga) / dt : 0.0;
      nlohmann::ordered_json j;
      j["step"] = st.step;
      j["epoch"] = (double(st.epoch) * double(N) + double(st.index)) / double(N);
      j["loss"] = acc.loss;
      j["loss_en"] = acc.loss_en;
      j["loss_xx"] = acc.loss_xx;
      if (cfg.train.image_prefix_loss) {
        j["prefix_en"] = acc.prefix_en;
        j["prefix_xx"] = acc.prefix_xx;
      }
      j["lr"] = lr;
      j["grad_norm"] = norm;
      // Timing and memory: these differ from run to run.
      j["pairs_per_s"] = pps;
      j["elapsed_s"] = std::chrono::duration<double>(now - t_start).count();
      j["peak_rss_mb"] = peak_rss_mb();
      const std::string line = j.dump() + "\n";
      XV_CHECK(std::fputs(line.c_str(), metrics) >= 0 && std::fflush(metrics) == 0, "{}: write failed",
               metrics_path);
      if (term) {
        std::string msg = fmt::format("step {}/{}  loss {:.4e} (en {:.4e}, xx {:.4e}", st.step, total, acc.loss,
                                      acc.loss_en, acc.loss_xx);
        if (cfg.train.image_prefix_loss)
          msg += fmt::format(", prefix en {:.4e}, xx {:.4e}", acc.prefix_en, acc.prefix_xx);
        msg += fmt::format(")  lr {:.3e}  grad {:.3e}  {:.1f} pairs/s  rss {:.0f} MB  eta {}", lr, norm, pps,
                           peak_rss_mb(), hms(eta));
        std::fprintf(stderr, "%s%s\n", tty ? "\r\x1b[K" : "", msg.c_str());
      }
      t_log = now;
      steps_since_log = 0;
    }
    if ((cfg.checkpoint.every_steps > 0 && st.step % cfg.checkpoint.every_steps == 0) || st.step == total)
      sum.last_checkpoint = save_checkpoint(out, st, trainable, adamw, config_yaml, cfg.checkpoint.keep);
    if (tty) {
      const int width = 30, fill = int(double(width) * double(st.step) / double(total));
      bar = fmt::format("\r\x1b[K[{}{}] {}/{}  loss {:.4e}  lr {:.2e}  ETA {}", std::string(size_t(fill), '#'),
                        std::string(size_t(width - fill), '.'), st.step, total, acc.loss, lr, hms(eta));
      std::fputs(bar.c_str(), stderr);
      std::fflush(stderr);
    }
  }
  if (tty && !bar.empty()) std::fputs("\n", stderr);
  sum.steps = st.step;
  sum.finished = st.step >= total;
  if (!sum.finished) return sum;
  // Full fine-tuning has no adapter: its export is the merged (whole) model.
  if (cfg.export_.adapter && cfg.trainable == "lora") model->save_adapter((fs::path(out) / "adapter").string());
  if (cfg.export_.merged || cfg.trainable == "full") model->save_merged((fs::path(out) / "merged").string());
  if (term)
    std::fprintf(stderr, "train: %lld steps done in %s; checkpoint %s%s%s\n", static_cast<long long>(st.step),
                 hms(std::chrono::duration<double>(Clock::now() - t_start).count()).c_str(),
                 sum.last_checkpoint.c_str(),
                 cfg.export_.adapter ? fmt::format("; adapter {}/adapter", out).c_str() : "",
                 cfg.export_.merged ? fmt::format("; merged model {}/merged", out).c_str() : "");
  return sum;
}

}  // namespace xv
