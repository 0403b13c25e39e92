#include "train/trainer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "train/checkpoint.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/model_config.h"
#include "models/backbones.h"
#include "train/schedule.h"
#include "train/teacher_cache.h"
#include "data/train_data.h"
#include "data/corpus_stream.h"
#include "kernels/ops.h"
#include "parallel/fsdp.h"
#include "parallel/launch_env.h"
#include "parallel/sharded_checkpoint.h"

namespace xv {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Keys a resumed run must share with its checkpoint: they change what is computed. Paths may move, and
// threads, activation checkpointing, logging, checkpointing and export do not change the numbers.
const char* kResumeKeys[] = {"seed",          "trainable",          "lora.r",
                             "lora.alpha",    "lora.dropout",       "lora.targets",
                             "lora.init",     "lora.rslora",        "train.epochs",
                             "train.max_steps", "train.batch_size",
                             "train.lr",      "train.schedule",     "train.warmup_steps",
                             "train.weight_decay", "train.betas",   "train.eps",
                             "train.max_grad_norm", "train.image_prefix_loss", "data.bucket_window",
                             "parallel.deterministic"};

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

// The ranks' roles for a strategy (docs/distributed.md).
struct Parallel {
  par::Communicator* world = nullptr;
  std::unique_ptr<par::Communicator> self;     // world of one, when no communicator is given
  std::unique_ptr<par::Communicator> frozen;   // the frozen base's shard group (full: world; hybrid: node)
  std::unique_ptr<par::Communicator> grads;    // trainable traffic, world-wide (its own, for the accounting)
  std::unique_ptr<par::Communicator> group;    // the optimizer's shard group; null = replicated
  std::unique_ptr<par::Communicator> across;   // hybrid: the same shard on the other nodes
};

Parallel make_parallel(const TrainConfig& cfg, par::Communicator* given) {
  Parallel p;
  if (!given) p.self = par::make_self_communicator(), given = p.self.get();
  p.world = given;
  const int W = given->size(), R = given->rank();
  if (W == 1) return p;
  const std::string& s = cfg.parallel.strategy;
  int64_t node = 0;  // hybrid: the shard group
  if (s == "hybrid") {
    const par::LaunchEnv env = par::launch_env();
    std::vector<int64_t> all(static_cast<size_t>(W));
    if (cfg.parallel.ranks_per_node > 0) {
      node = R / cfg.parallel.ranks_per_node;
    } else if (env.node >= 0) {
      node = env.node;
    } else {  // the host name: ranks on one machine form a node
      char host[256] = {};
      ::gethostname(host, sizeof(host) - 1);
      const int64_t h = int64_t(fnv1a64(host) >> 1);
      given->all_gather(&h, all.data(), 1, par::DType::i64);
      std::vector<int64_t> seen;
      for (int64_t v : all)
        if (std::find(seen.begin(), seen.end(), v) == seen.end()) seen.push_back(v);
      node = std::find(seen.begin(), seen.end(), h) - seen.begin();
    }
    given->all_gather(&node, all.data(), 1, par::DType::i64);
    const int64_t per_node = std::count(all.begin(), all.end(), node);
    for (int64_t v : all)
      XV_CHECK(std::count(all.begin(), all.end(), v) == per_node,
               "parallel.strategy hybrid: every node needs the same number of ranks (node {} has {}, node {} has "
               "{}); set parallel.ranks_per_node", node, per_node, v, std::count(all.begin(), all.end(), v));
  }
  p.grads = given->split(0, R);
  if (s == "full") {
    p.frozen = given->split(0, R);
    if (!cfg.parallel.replicate_trainable) p.group = given->split(0, R);
  } else if (s == "grad_op") {
    p.group = given->split(0, R);
  } else if (s == "hybrid") {
    p.frozen = given->split(int(node), R);
    if (!cfg.parallel.replicate_trainable) {
      p.group = given->split(int(node), R);
      p.across = given->split(p.group->rank(), R);
    }
  }
  return p;
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
  Parallel par = make_parallel(cfg, o.world);
  par::Communicator& world = *par.world;
  const int64_t W = world.size(), R = world.rank();
  const bool lead = R == 0;  // rank 0 prints, writes metrics.jsonl, config.yaml and the exports
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
  // A step: grad_accum micro-batches of batch_size pairs on every rank (global micro-batch j = m * W + rank).
  const int64_t N = src->size(), bs = cfg.train.batch_size, ga = cfg.train.grad_accum, GB = bs * ga * W;
  const int64_t total = cfg.train.max_steps > 0 ? cfg.train.max_steps : cfg.train.epochs * N / GB;
  XV_CHECK(total >= 1,
           "{}: {} pairs x {} epoch(s) make less than one optimizer step of train.batch_size x train.grad_accum x {} "
           "rank(s) = {} pairs: lower them, or set train.max_steps",
           src->path(), N, cfg.train.epochs, W, GB);
  const uint64_t seed = uint64_t(cfg.seed);
  const std::string& out = cfg.output_dir;
  std::error_code ec;
  fs::create_directories(fs::path(out) / "logs", ec);
  XV_CHECK(!ec, "output_dir: {}: cannot create folder: {}", out, ec.message());

  // Every rank's own log: what it did, and the error that stopped it.
  const std::string log_path = (fs::path(out) / "logs" / fmt::format("rank-{:05}.log", R)).string();
  std::FILE* rank_log = std::fopen(log_path.c_str(), o.resume ? "a" : "w");
  XV_CHECK(rank_log, "{}: cannot open for writing", log_path);
  struct Closer {
    std::FILE* f;
    ~Closer() {
      if (f) std::fclose(f);
    }
  } log_closer{rank_log};
  auto rlog = [&](const std::string& line) {
    std::fprintf(rank_log, "%s\n", line.c_str());
    std::fflush(rank_log);
  };
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  rlog(fmt::format("rank {} of {} on {} (pid {}), strategy {}{}", R, W, host, ::getpid(), cfg.parallel.strategy,
                   cfg.parallel.deterministic ? ", deterministic reduction" : ""));

  try {
  // Where to start.
  TrainState st;
  st.total_steps = total;
  st.num_pairs = N;
  st.seed = seed;
  st.data_fingerprint = src->fingerprint();
  st.world = W;
  st.grad_accum = ga;
  const std::string resume_from = o.resume ? latest_checkpoint(out) : "";
  if (!o.resume) {
    const std::string prev = latest_checkpoint(out);
    XV_CHECK(prev.empty(), "output_dir: {} already holds checkpoints (newest {}): pass --resume to continue that run, "
             "or choose another output_dir", out, fs::path(prev).filename().string());
  }
  if (lead) remove_stale_staging(out);
  world.barrier();
  if (!resume_from.empty()) {
    const TrainState saved = read_checkpoint_state(resume_from);
    const TrainConfig old = parse_train_config(read_checkpoint_config(resume_from), resume_from + "/config.yaml");
    for (const char* key : kResumeKeys) {
      const std::string now = train_config_value(cfg, key), then = train_config_value(old, key);
      XV_CHECK(now == then, "--resume: {} is {} here but {} in {}: a resumed run must keep it", key, now, then,
               resume_from);
    }
    // The world size may change (the checkpoint re-shards) as long as a step covers the same micro-batches.
    const int64_t then_ga = saved.grad_accum > 0 ? saved.grad_accum : old.train.grad_accum;
    XV_CHECK(then_ga * saved.world == ga * W,
             "--resume: {} made steps of {} micro-batches (train.grad_accum {} x {} rank(s)), this run makes {} "
             "(train.grad_accum {} x {} rank(s)): keep train.grad_accum x ranks", resume_from, then_ga * saved.world,
             then_ga, saved.world, ga * W, ga, W);
    XV_CHECK(saved.num_pairs == N && saved.data_fingerprint == src->fingerprint(),
             "--resume: {} is not the data of {} ({} pairs then, {} now, or their contents differ)", src->path(),
             resume_from, saved.num_pairs, N);
    XV_CHECK(saved.total_steps == total && saved.seed == seed, "--resume: {} was a run of {} steps, this one has {}",
             resume_from, saved.total_steps, total);
    st = saved;
    st.world = W;
    st.grad_accum = ga;
  }
  const int64_t start_step = st.step;

  // With the frozen base sharded, the model is laid out without it and FrozenShards reads it unit by unit below:
  // no rank holds the whole base at start-up.
  const bool shard_frozen = par.frozen && par.frozen->size() > 1;
  auto model = KdModel::load(cfg.model, cfg.trainable, cfg.lora_config(), seed, shard_frozen);
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

  // The frozen base, sharded over the shard group (full, hybrid); the trainable tensors in flat buffers.
  std::unique_ptr<par::FrozenShards> frozen;
  if (shard_frozen) {
    UnitOptions uo;
    uo.vision_layers_per_unit = cfg.parallel.vision_layers_per_unit;
    frozen = std::make_unique<par::FrozenShards>(*par.frozen, model->frozen_units(uo), cfg.parallel.prefetch);
    model->set_unit_access(frozen.get());
  }
  const std::vector<TrainableTensor> trainable = model->trainable();
  if (!resume_from.empty()) load_checkpoint(resume_from, trainable);
  par::TrainableOptions to;
  to.world = par.grads ? par.grads.get() : &world;
  to.group = par.group.get();
  to.across = par.across.get();
  to.deterministic = cfg.parallel.deterministic;
  to.grad_accum = ga;
  par::TrainableShards shards(trainable, cfg.adamw_config(), to);
  if (!resume_from.empty()) par::load_sharded_optimizer(resume_from, shards);
  int64_t n_trainable = 0;
  for (const auto& t : trainable) n_trainable += t.value->numel();
  rlog(fmt::format("frozen base: {} units, {:.1f} MB held by this rank; trainable: {} parameters, elements [{}, {}) "
                   "of {} owned by this rank", frozen ? frozen->units() : 0,
                   frozen ? double(frozen->resident_bytes()) / 1048576.0 : 0.0, n_trainable, shards.own_begin(),
                   shards.own_end(), shards.padded()));

  const std::string metrics_path = (fs::path(out) / "metrics.jsonl").string();
  std::FILE* metrics = nullptr;
  if (lead) {
    if (resume_from.empty()) write_file_atomic(metrics_path, "");
    else truncate_metrics(metrics_path, st.step);
    write_file_atomic((fs::path(out) / "config.yaml").string(), config_yaml);
    metrics = std::fopen(metrics_path.c_str(), "a");
    XV_CHECK(metrics, "{}: cannot open for appending", metrics_path);
  }
  Closer metrics_closer{metrics};

  const bool term = !o.quiet && lead, tty = term && ::isatty(2);
  if (term && !src->note().empty()) std::fprintf(stderr, "train: note: %s\n", src->note().c_str());
  if (term && o.resume && resume_from.empty())
    std::fprintf(stderr, "train: --resume: no checkpoint in %s/checkpoints yet, starting from step 0\n", out.c_str());
  if (term)
    std::fprintf(stderr, "train: %s, %lld pairs, %lld trainable parameters, %lld steps of %lld x %lld pairs%s%s\n",
                 model->arch().c_str(), static_cast<long long>(N), static_cast<long long>(n_trainable),
                 static_cast<long long>(total), static_cast<long long>(bs), static_cast<long long>(ga),
                 W > 1 ? fmt::format(" x {} ranks ({})", W, cfg.parallel.strategy).c_str() : "",
                 resume_from.empty() ? "" : fmt::format(", resumed from {}", resume_from).c_str());

  // The pairs, read and prepared ahead (data/corpus_stream.h) from the checkpoint's position; this rank reads
  // blocks R, R + W, ... of batch_size pairs of the global stream.
  StreamOptions so;
  so.seed = seed;
  so.rank = R;
  so.world = W;
  so.block = bs;
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
  // Communication per step (docs/distributed.md): bytes this rank received, from the communicators' counters.
  auto comm_bytes = [&] {
    std::array<uint64_t, 3> b{};  // frozen base gathered, gradients reduced, parameters gathered
    if (par.frozen) b[0] = par.frozen->stats().all_gather_bytes;
    for (par::Communicator* c : {par.grads.get(), par.group.get(), par.across.get()}) {
      if (!c) continue;
      const par::CommStats& x = c->stats();
      b[1] += x.reduce_scatter_bytes + x.all_reduce_bytes + x.all_to_all_bytes;
      b[2] += x.all_gather_bytes;
    }
    return b;
  };
  auto comm_wait = [&] {
    double w = 0;
    for (par::Communicator* c : {par.frozen.get(), par.grads.get(), par.group.get(), par.across.get()})
      if (c) w += c->stats().wait_s;
    return w;
  };

  TrainSummary sum;
  sum.start_step = start_step;
  sum.total_steps = total;
  sum.last_checkpoint = resume_from;
  const auto t_loop = Clock::now();
  auto t_log = t_loop;
  int64_t steps_since_log = 0;
  auto bytes_log = comm_bytes();
  double wait_log = comm_wait();
  std::string bar;
  const char* kTerms[] = {"loss_en", "loss_xx", "prefix_en", "prefix_xx", "loss"};
  while (st.step < total) {
    if (o.stop_after > 0 && st.step - start_step >= o.stop_after) break;
    model->zero_grad();
    std::vector<double> terms_mine(size_t(ga * 5));  // (ga, 5) this rank's micro-batches
    for (int64_t m = 0; m < ga; ++m) {
      std::vector<int64_t> idx;
      std::vector<TrainPair> batch;
      for (int64_t i = 0; i < bs; ++i) {
        batch.push_back(stream.next());
        idx.push_back(batch.back().index);
      }
      Tensor t_en;
      KdStepOptions ko;
      ko.loss_scale = 1.0f / float(ga * W);
      ko.dropout_seed = micro_batch_seed(seed, st.step, m * W + R);  // the global micro-batch
      ko.checkpointing = cfg.train.checkpointing;
      ko.image_prefix_loss = cfg.train.image_prefix_loss;
      ko.vision_units = frozen && src->has_images();  // every rank gathers the tower's units (phi3_v)
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
        fail("step {}, micro-batch {} ({}): {}", st.step + 1, m * W + R + 1, where_list(idx), e.what());
      }
      const double v[5] = {t.loss_en, t.loss_xx, t.prefix_en, t.prefix_xx, t.loss};
      for (int k = 0; k < 5; ++k) {
        XV_CHECK(std::isfinite(v[k]),
                 "step {}: loss term '{}' is {} (micro-batch {}, {}); training stopped: {}", st.step + 1, kTerms[k],
                 nonfinite(v[k]), m * W + R + 1, where_list(idx),
                 sum.last_checkpoint.empty() ? "no checkpoint had been written yet"
                                             : "the last checkpoint, " + sum.last_checkpoint + ", is intact");
        terms_mine[size_t(m * 5 + k)] = v[k];
      }
      if (cfg.parallel.deterministic) {
        shards.take_micro_batch(m);
        model->zero_grad();
      }
    }
    st.epoch = stream.position().epoch, st.index = stream.position().index;
    // The step's terms: the mean over every rank's micro-batches, summed in global order.
    std::vector<double> terms_all(size_t(W * ga * 5));
    world.all_gather(terms_mine.data(), terms_all.data(), terms_mine.size(), par::DType::f64);
    KdLossTerms acc;
    double* accs[5] = {&acc.loss_en, &acc.loss_xx, &acc.prefix_en, &acc.prefix_xx, &acc.loss};
    for (int64_t j = 0; j < W * ga; ++j)
      for (int k = 0; k < 5; ++k) *accs[k] += terms_all[size_t(((j % W) * ga + j / W) * 5 + k)];
    for (double* v : accs) *v /= double(ga * W);
    const double lr = cfg.train.lr * lr_lambda(cfg.train.schedule, st.step, cfg.train.warmup_steps, total);
    const double norm = shards.step(float(lr), cfg.train.max_grad_norm);
    XV_CHECK(std::isfinite(norm), "step {}: the gradient norm is {}; training stopped: {}", st.step + 1, nonfinite(norm),
             sum.last_checkpoint.empty() ? "no checkpoint had been written yet"
                                         : "the last checkpoint, " + sum.last_checkpoint + ", is intact");
    ++st.step;
    ++steps_since_log;
    sum.last = acc;

    const auto now = Clock::now();
    const double run_s = std::chrono::duration<double>(now - t_loop).count();
    const double eta = run_s / double(st.step - start_step) * double(total - st.step);
    if (st.step % cfg.log.every_steps == 0 || st.step == total) {
      const double dt = std::chrono::duration<double>(now - t_log).count();
      const double pps = dt > 0 ? double(steps_since_log * GB) / dt : 0.0;
      const auto bytes = comm_bytes();
      const double wait = comm_wait();
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
      if (W > 1) {
        // Bytes this rank received per step (the same on every rank; docs/distributed.md gives the formula).
        j["world"] = W;
        j["comm_frozen_bytes"] = (bytes[0] - bytes_log[0]) / uint64_t(steps_since_log);
        j["comm_grad_bytes"] = (bytes[1] - bytes_log[1]) / uint64_t(steps_since_log);
        j["comm_param_bytes"] = (bytes[2] - bytes_log[2]) / uint64_t(steps_since_log);
      }
      // Timing and memory: these differ from run to run.
      j["pairs_per_s"] = pps;
      j["elapsed_s"] = std::chrono::duration<double>(now - t_start).count();
      j["peak_rss_mb"] = peak_rss_mb();
      if (W > 1) {
        j["comm_wait_s"] = (wait - wait_log) / double(steps_since_log);  // communication not hidden by compute
        j["frozen_resident_mb"] = frozen ? double(frozen->resident_bytes()) / 1048576.0 : 0.0;
        j["frozen_peak_gathered_mb"] = frozen ? double(frozen->peak_gathered_bytes()) / 1048576.0 : 0.0;
        j["rss_mb"] = current_rss_mb();
      }
      const std::string line = j.dump() + "\n";
      if (lead)
        XV_CHECK(std::fputs(line.c_str(), metrics) >= 0 && std::fflush(metrics) == 0, "{}: write failed",
                 metrics_path);
      std::string msg = fmt::format("step {}/{}  loss {:.4e} (en {:.4e}, xx {:.4e}", st.step, total, acc.loss,
                                    acc.loss_en, acc.loss_xx);
      if (cfg.train.image_prefix_loss)
        msg += fmt::format(", prefix en {:.4e}, xx {:.4e}", acc.prefix_en, acc.prefix_xx);
      msg += fmt::format(")  lr {:.3e}  grad {:.3e}  {:.1f} pairs/s  rss {:.0f} MB  eta {}", lr, norm, pps,
                         peak_rss_mb(), hms(eta));
      rlog(msg);
      if (term) std::fprintf(stderr, "%s%s\n", tty ? "\r\x1b[K" : "", msg.c_str());
      t_log = now;
      steps_since_log = 0;
      bytes_log = bytes;
      wait_log = wait;
    }
    if ((cfg.checkpoint.every_steps > 0 && st.step % cfg.checkpoint.every_steps == 0) || st.step == total) {
      sum.last_checkpoint = par::save_sharded_checkpoint(
          world, out, st.step, shards,
          {{"config.yaml", config_yaml}, {"state.json", checkpoint_state_json(st, shards.adamw_steps())}},
          cfg.checkpoint.keep);
      rlog("checkpoint " + sum.last_checkpoint);
      bytes_log = comm_bytes();  // (the checkpoint's own traffic is not a step's)
    }
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
  if (lead) {
    // Full fine-tuning has no adapter: its export is the merged (whole) model.
    if (cfg.export_.adapter && cfg.trainable == "lora") model->save_adapter((fs::path(out) / "adapter").string());
    if (cfg.export_.merged || cfg.trainable == "full") model->save_merged((fs::path(out) / "merged").string());
  }
  world.barrier();
  rlog(fmt::format("done: {} steps", st.step));
  if (term)
    std::fprintf(stderr, "train: %lld steps done in %s; checkpoint %s%s%s\n", static_cast<long long>(st.step),
                 hms(std::chrono::duration<double>(Clock::now() - t_start).count()).c_str(),
                 sum.last_checkpoint.c_str(),
                 cfg.export_.adapter ? fmt::format("; adapter {}/adapter", out).c_str() : "",
                 cfg.export_.merged ? fmt::format("; merged model {}/merged", out).c_str() : "");
  return sum;
  } catch (const std::exception& e) {
    rlog(std::string("error: ") + e.what());
    throw;
  }
}

}  // namespace xv
