#include "data/corpus_stream.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <system_error>
#include <thread>

#include "core/error.h"
#include "core/file_util.h"
#include "data/corpus.h"
#include "data/hdf5_file.h"

namespace xv {

namespace fs = std::filesystem;

bool is_hdf5_file(const std::string& path) {
  if (path_kind(path) != "is a regular file") return false;
  std::ifstream f(path, std::ios::binary);
  char sig[8] = {};
  // The HDF5 signature at offset 0 (a user block would move it; our files and h5py's have none).
  return f.read(sig, 8) && std::string(sig, 8) == std::string("\x89HDF\r\n\x1a\n", 8);
}

namespace {

// ---- Sources ----

class JsonlSource : public PairSource {
 public:
  explicit JsonlSource(TrainData d) : d_(std::move(d)) {
    for (const auto& p : d_.pairs) images_ = images_ || !p.image.empty();
  }
  int64_t size() const override { return int64_t(d_.pairs.size()); }
  std::string path() const override { return d_.path; }
  std::string where(int64_t i) const override { return d_.where(size_t(i)); }
  std::string fingerprint() const override { return d_.fingerprint; }
  bool has_images() const override { return images_; }
  int64_t length(int64_t i) const override {
    return int64_t(d_.pairs[size_t(i)].text_en.size() + d_.pairs[size_t(i)].text_xx.size());
  }
  std::vector<TrainPair> fetch(const std::vector<int64_t>& idx) override {
    std::vector<TrainPair> out;
    for (int64_t i : idx) {
      out.push_back(d_.pairs[size_t(i)]);
      out.back().index = i;
    }
    return out;
  }

 private:
  TrainData d_;
  bool images_ = false;
};

class CorpusSource : public PairSource {
 public:
  CorpusSource(const std::string& path, const SourceOptions& o) : path_(path), f_(h5::File::open(path)) {
    ReadCorpusOptions ro;
    ro.images = false;   // read per pair
    ro.teacher = false;  // read per pair
    ro.tokens = !o.tokenizer_json.empty();
    c_ = read_corpus(path, ro);
    // The contents must hash to the fingerprint recorded at write time (what `corpus validate` checks): a
    // corpus modified afterwards would train on something else than it says, and --resume would trust it.
    const std::string fp = corpus_fingerprint(c_, [&](int64_t im) {
      const uint64_t a = c_.images.offsets[size_t(im)], b = c_.images.offsets[size_t(im) + 1];
      std::string bytes(size_t(b - a), '\0');
      f_.read_rows<uint8_t>("/images/bytes", int64_t(a), int64_t(b - a), reinterpret_cast<uint8_t*>(bytes.data()));
      return bytes;
    });
    XV_CHECK(fp == c_.meta.fingerprint,
             "{}: root attribute 'fingerprint' is {}, but the contents hash to {} (modified after it was written?); "
             "`xvlm2vec corpus validate {}` lists what is wrong, and the builder that made it can write it again",
             path, c_.meta.fingerprint, fp, path);
    if (c_.tokens && c_.tokens->tokenizer_fingerprint != tokenizer_fingerprint(o.tokenizer_json)) {
      note_ = fmt::format("{}: /tokens was made by another tokenizer ({}) than {}: ignored, the reader's workers "
                          "tokenize instead",
                          path, c_.tokens->tokenizer_fingerprint, o.tokenizer_json);
      c_.tokens.reset();
    }
    for (int64_t im : c_.pairs.image) images_ = images_ || im >= 0;
    if (o.teacher) {
      XV_CHECK(f_.exists("/teacher"),
               "{}: data.teacher_cache is 'corpus' but the corpus has no /teacher block: run `xvlm2vec corpus "
               "cache-teacher --model MODEL {}` first",
               path, path);
      const std::string cf = f_.read_string_attr("/teacher", "corpus_fingerprint");
      XV_CHECK(cf == c_.meta.fingerprint,
               "{}: /teacher was computed for another corpus ({}; this one is {}): run `corpus cache-teacher` again",
               path, cf, c_.meta.fingerprint);
      const auto sh = f_.shape("/teacher/embeddings", 2);
      f_.check_dtype("/teacher/embeddings", DType::F32);
      XV_CHECK(sh[0] == size(), "{}: /teacher/embeddings has {} rows, the corpus {} pairs", path, sh[0], size());
      teacher_dim_ = sh[1];
      teacher_model_ = f_.read_string_attr("/teacher", "model_fingerprint");
    }
  }
  int64_t size() const override { return int64_t(c_.pairs.size()); }
  std::string path() const override { return path_; }
  std::string where(int64_t i) const override {
    return fmt::format("{} pair {} (source {})", path_, i, c_.sources.at(size_t(c_.pairs.source[size_t(i)])));
  }
  std::string fingerprint() const override { return c_.meta.fingerprint; }
  bool has_images() const override { return images_; }
  int64_t length(int64_t i) const override {
    const auto& o1 = c_.text_en.offsets;
    const auto& o2 = c_.text_xx.offsets;
    const size_t e = size_t(c_.pairs.en[size_t(i)]), x = size_t(c_.pairs.xx[size_t(i)]);
    return int64_t(o1[e + 1] - o1[e] + o2[x + 1] - o2[x]);
  }
  const std::string& teacher_model() const { return teacher_model_; }
  std::string note() const override { return note_; }

  std::vector<TrainPair> fetch(const std::vector<int64_t>& idx) override {
    std::vector<TrainPair> out;
    for (int64_t i : idx) {
      const size_t r = size_t(i);
      TrainPair p;
      p.index = i;
      p.text_en = std::string(c_.text_en.at(size_t(c_.pairs.en[r])));
      p.text_xx = std::string(c_.text_xx.at(size_t(c_.pairs.xx[r])));
      p.lang = c_.meta.languages[c_.pairs.lang[r]];
      if (c_.tokens) {
        p.ids_en = row(c_.tokens->en, size_t(c_.pairs.en[r]));
        p.ids_xx = row(c_.tokens->xx, size_t(c_.pairs.xx[r]));
      }
      if (const int64_t im = c_.pairs.image[r]; im >= 0) {
        const uint64_t a = c_.images.offsets[size_t(im)], b = c_.images.offsets[size_t(im) + 1];
        auto bytes = std::make_shared<std::string>(size_t(b - a), '\0');
        f_.read_rows<uint8_t>("/images/bytes", int64_t(a), int64_t(b - a), reinterpret_cast<uint8_t*>(bytes->data()));
        p.image_bytes = std::move(bytes);
        p.image_name = fmt::format("{}: image {} ({})", path_, im, c_.image_names.at(size_t(im)));
      }
      if (teacher_dim_ > 0) {
        p.teacher_en.resize(size_t(teacher_dim_));
        f_.read_rows<float>("/teacher/embeddings", i, 1, p.teacher_en.data());
      }
      out.push_back(std::move(p));
    }
    return out;
  }

 private:
  static std::vector<int32_t> row(const RaggedIds& r, size_t i) {
    return std::vector<int32_t>(r.ids.begin() + int64_t(r.offsets[i]), r.ids.begin() + int64_t(r.offsets[i + 1]));
  }
  std::string path_;
  h5::File f_;
  Corpus c_;  // without image bytes and teacher rows
  bool images_ = false;
  int64_t teacher_dim_ = 0;
  std::string teacher_model_;
  std::string note_;
};

}  // namespace

std::unique_ptr<PairSource> open_pair_source(const std::string& path, const SourceOptions& opt) {
  XV_CHECK(fs::is_regular_file(path), "{}: no such file", path);
  if (is_hdf5_file(path)) return std::make_unique<CorpusSource>(path, opt);
  XV_CHECK(!opt.teacher, "{}: data.teacher_cache 'corpus' needs an HDF5 corpus, this is a JSONL file", path);
  return std::make_unique<JsonlSource>(read_train_data(path, opt.image_root));
}

std::unique_ptr<PairSource> make_jsonl_source(TrainData data) { return std::make_unique<JsonlSource>(std::move(data)); }

std::string corpus_teacher_model(const PairSource& src) {
  const auto* c = dynamic_cast<const CorpusSource*>(&src);
  return c ? c->teacher_model() : "";
}

std::vector<int64_t> epoch_sequence(const PairSource& src, const StreamOptions& o, int64_t epoch) {
  const int64_t P = src.size();
  std::vector<int64_t> seq = epoch_permutation(P, o.seed, epoch);
  if (o.bucket_window <= 1) return seq;
  // Length bucketing: within each window, pairs of similar length end up in the same group (micro-batch),
  // and the groups' order is shuffled so that short and long batches alternate.
  const int64_t W = o.bucket_window, G = std::max<int64_t>(1, o.bucket_batch);
  for (int64_t w0 = 0; w0 < P; w0 += W) {
    const int64_t w1 = std::min(P, w0 + W);
    std::stable_sort(seq.begin() + w0, seq.begin() + w1,
                     [&](int64_t a, int64_t b) { return src.length(a) < src.length(b); });
    const int64_t groups = (w1 - w0 + G - 1) / G;
    std::vector<int64_t> order(static_cast<size_t>(groups));
    std::iota(order.begin(), order.end(), 0);
    uint64_t st = o.seed ^ (uint64_t(epoch) * 0x9e3779b97f4a7c15ull) ^ (uint64_t(w0) << 20);
    for (int64_t i = groups - 1; i > 0; --i) std::swap(order[size_t(i)], order[splitmix64(st) % uint64_t(i + 1)]);
    std::vector<int64_t> win;
    for (int64_t g : order)
      for (int64_t k = w0 + g * G; k < std::min(w1, w0 + (g + 1) * G); ++k) win.push_back(seq[size_t(k)]);
    std::copy(win.begin(), win.end(), seq.begin() + w0);
  }
  return seq;
}

// ---- The pipeline ----

struct PairStream::Impl {
  struct Item {
    std::vector<TrainPair> pairs;
    std::vector<std::exception_ptr> errors;  // per pair (null = fine)
    std::exception_ptr fatal;                // the read failed: nothing after it
  };

  std::shared_ptr<PairSource> src;
  StreamOptions o;
  std::mutex m;
  std::condition_variable cv_space, cv_work, cv_done;
  std::deque<std::pair<int64_t, std::unique_ptr<Item>>> work;  // read, to prepare
  std::map<int64_t, std::unique_ptr<Item>> done;                 // prepared, by sequence number
  int64_t in_flight = 0;                                         // pairs read and not yet taken
  bool stop = false;
  std::thread io;
  std::vector<std::thread> workers;

  // Consumer side.
  int64_t next_seq = 0;
  std::unique_ptr<Item> cur;
  size_t cur_pos = 0;

  void prepare_item(Item& it) {
    it.errors.resize(it.pairs.size());
    if (!o.prepare) return;
    for (size_t i = 0; i < it.pairs.size(); ++i) {
      try {
        it.pairs[i].prepared = o.prepare(it.pairs[i]);
      } catch (const Error& e) {
        it.errors[i] = std::make_exception_ptr(Error(src->where(it.pairs[i].index) + ": " + e.what()));
      } catch (const std::exception& e) {
        it.errors[i] = std::make_exception_ptr(Error(src->where(it.pairs[i].index) + ": " + e.what()));
      }
    }
  }

  // Reads this rank's blocks of the global stream from global offset `g` (epoch * P + index) on.
  void run_io(int64_t g) {
    const int64_t P = src->size(), b = o.block, n = o.world;
    int64_t seq_epoch = -1;
    std::vector<int64_t> seq;
    int64_t left = b;  // pairs of this rank's current block still to read
    g += o.rank * b;   // the first block of this rank
    for (int64_t c = 0;; ++c) {
      const int64_t epoch = g / P, index = g % P;
      if (epoch != seq_epoch) seq = epoch_sequence(*src, o, epoch), seq_epoch = epoch;
      const int64_t k = std::min({o.chunk, left, P - index});
      {
        std::unique_lock lk(m);
        cv_space.wait(lk, [&] { return stop || in_flight == 0 || in_flight + k <= o.prefetch; });
        if (stop) return;
        in_flight += k;
      }
      auto it = std::make_unique<Item>();
      try {
        it->pairs = src->fetch(std::vector<int64_t>(seq.begin() + index, seq.begin() + index + k));
      } catch (const std::exception& e) {
        it->fatal = std::make_exception_ptr(Error(fmt::format("reading {}: {}", src->path(), e.what())));
      }
      g += k, left -= k;
      if (left == 0) g += (n - 1) * b, left = b;  // skip the other ranks' blocks
      const bool fatal = bool(it->fatal);
      if (workers.empty() || fatal) {
        if (!fatal) prepare_item(*it);
        std::lock_guard lk(m);
        done[c] = std::move(it);
        cv_done.notify_all();
      } else {
        std::lock_guard lk(m);
        work.emplace_back(c, std::move(it));
        cv_work.notify_one();
      }
      if (fatal) return;
    }
  }

  void run_worker() {
    while (true) {
      std::pair<int64_t, std::unique_ptr<Item>> job;
      {
        std::unique_lock lk(m);
        cv_work.wait(lk, [&] { return stop || !work.empty(); });
        if (stop) return;
        job = std::move(work.front());
        work.pop_front();
      }
      prepare_item(*job.second);
      std::lock_guard lk(m);
      done[job.first] = std::move(job.second);
      cv_done.notify_all();
    }
  }
};

PairStream::PairStream(std::shared_ptr<PairSource> src, const StreamOptions& o, StreamPosition start)
    : impl_(std::make_unique<Impl>()) {
  XV_CHECK(o.world >= 1 && o.rank >= 0 && o.rank < o.world, "data stream: rank {} of {} ranks", o.rank, o.world);
  XV_CHECK(o.prefetch >= 1 && o.chunk >= 1 && o.workers >= 0 && o.block >= 1,
           "data stream: prefetch, chunk, block >= 1 and workers >= 0");
  P_ = src->size();
  XV_CHECK(P_ >= 1, "{}: no pairs", src->path());
  XV_CHECK(start.epoch >= 0 && start.index >= 0, "data stream: position (epoch {}, index {})", start.epoch,
           start.index);
  start_ = start.epoch * P_ + start.index;
  impl_->src = std::move(src);
  impl_->o = o;
  try {
    for (int w = 0; w < o.workers; ++w) impl_->workers.emplace_back([this] { impl_->run_worker(); });
    impl_->io = std::thread([this, g = start_] { impl_->run_io(g); });
  } catch (const std::system_error& e) {
    // A thread that could not start (no memory for its stack, a process limit): stop those that did.
    stop_threads();
    fail("data stream: cannot start its reader threads ({} worker(s) and the I/O thread): {}", o.workers, e.what());
  }
}

PairStream::~PairStream() { stop_threads(); }

void PairStream::stop_threads() {
  {
    std::lock_guard lk(impl_->m);
    impl_->stop = true;
  }
  impl_->cv_space.notify_all();
  impl_->cv_work.notify_all();
  impl_->cv_done.notify_all();
  if (impl_->io.joinable()) impl_->io.join();
  for (auto& t : impl_->workers)
    if (t.joinable()) t.join();
}

TrainPair PairStream::next() {
  Impl& s = *impl_;
  if (!s.cur || s.cur_pos >= s.cur->pairs.size()) {
    std::unique_lock lk(s.m);
    s.cv_done.wait(lk, [&] { return s.done.count(s.next_seq) > 0; });
    s.cur = std::move(s.done[s.next_seq]);
    s.done.erase(s.next_seq++);
    s.in_flight -= int64_t(s.cur->pairs.size());
    s.cur_pos = 0;
    s.cv_space.notify_all();
    if (s.cur->fatal) {
      const auto err = s.cur->fatal;
      s.done[--s.next_seq] = std::move(s.cur);  // stays: every later next() fails the same way
      std::rethrow_exception(err);
    }
  }
  const size_t i = s.cur_pos;
  if (s.cur->errors[i]) std::rethrow_exception(s.cur->errors[i]);
  ++s.cur_pos;
  TrainPair p = std::move(s.cur->pairs[i]);
  ++returned_;
  return p;
}

StreamPosition PairStream::position() const {
  const int64_t b = impl_->o.block, n = impl_->o.world;
  const int64_t g = start_ + (returned_ / b) * n * b + returned_ % b;
  return {g / P_, g % P_};
}

}  // namespace xv
