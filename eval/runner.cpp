// The evaluation runner (eval/runner.h): distinct texts, embedding per model, scoring, gold ranks.
#include "eval/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <unordered_map>

#include <unistd.h>

#include "models/embedder.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/model_config.h"
#include "core/resources.h"
#include "core/safetensors.h"
#include "data/train_data.h"
#include "image/image.h"
#include "models/backbones.h"
#include "models/kd/kd_model.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

// The benchmark as indices into one list of distinct items (a text, with an image or none). Items are keyed by
// content: the text and the image file's bytes (fnv1a64 and size), so a candidate that many queries share, or
// one image under two paths, is embedded once.
struct ItemIndex {
  std::vector<EmbedItem> items;          // (N) distinct items; images as resolved paths
  std::vector<std::string> first_use;    // (N) where each appears first (file:line and field), for messages
  std::unordered_map<std::string, int32_t> index;
  std::unordered_map<std::string, std::string> image_key;  // resolved path -> content key
  int64_t images = 0;                                      // distinct items with an image
  std::string first_image_task, first_image_where;         // the first task (and query) that has an image
  // Per task, per query: the query's item, then its candidates' items.
  std::vector<std::vector<std::vector<int32_t>>> rows;  // [task][query] = (1 + num_candidates)
  std::vector<int32_t> english;                         // (english texts)

  int32_t add(const std::string& text, const std::string& image, const std::string& where) {
    std::string key = text;
    if (!image.empty()) {
      auto it = image_key.find(image);
      if (it == image_key.end()) {
        std::string bytes;
        try {
          bytes = read_file(image, kMaxImageFileBytes);
        } catch (const Error& e) {
          fail("{}: {}", where, e.what());
        }
        it = image_key.emplace(image, fmt::format("{}:{}", fingerprint_hex(fnv1a64(bytes)), bytes.size())).first;
      }
      key += '\x1f' + it->second;
    }
    auto [it, fresh] = index.emplace(key, int32_t(items.size()));
    if (fresh) {
      XV_CHECK(items.size() < size_t(INT32_MAX), "{}: more than 2^31 distinct texts and images", where);
      items.push_back({text, image});
      first_use.push_back(where);
      images += !image.empty();
    }
    return it->second;
  }
};

// An image path of the benchmark (relative to its folder) as a path to open.
std::string resolve_image(const Benchmark& b, const std::string& p) {
  if (p.empty() || b.dir.empty() || fs::path(p).is_absolute()) return p;
  return (fs::path(b.dir) / p).string();
}

ItemIndex index_items(const Benchmark& b) {
  ItemIndex ix;
  for (const auto& t : b.tasks) {
    auto& task_rows = ix.rows.emplace_back();
    for (size_t q = 0; q < t.queries.size(); ++q) {
      const BenchmarkQuery& qu = t.queries[q];
      const std::string where = query_where(b, t, q);
      auto& row = task_rows.emplace_back();
      row.reserve(qu.candidates.size() + 1);
      const bool has_image = !qu.image.empty() || !qu.candidate_images.empty();
      if (has_image && ix.first_image_task.empty()) ix.first_image_task = t.name, ix.first_image_where = where;
      row.push_back(ix.add(apply_template(t.query_template, qu.text), resolve_image(b, qu.image),
                           where + (qu.image.empty() ? " (qry_text)" : " (qry_text, qry_img_path)")));
      for (size_t c = 0; c < qu.candidates.size(); ++c) {
        const std::string img = qu.candidate_images.empty() ? "" : qu.candidate_images[c];
        row.push_back(ix.add(apply_template(t.target_template, qu.candidates[c]), resolve_image(b, img),
                             fmt::format("{} ({} entry {})", where, img.empty() ? "tgt_text" : "tgt_text, tgt_img_path", c)));
      }
    }
  }
  const std::string en_file = b.dir.empty() ? b.english_file : (fs::path(b.dir) / b.english_file).string();
  for (size_t i = 0; i < b.english.size(); ++i)
    ix.english.push_back(ix.add(b.english[i], "", en_file + ": text " + std::to_string(i + 1)));
  return ix;
}

// Rows of e (N, D) scaled to unit length; a zero row stays zero (it then scores 0 against everything).
void normalize_rows(Tensor& e) {
  const int64_t N = e.dim(0), D = e.dim(1);
  for (int64_t i = 0; i < N; ++i) {
    float* r = e.data<float>() + i * D;
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += double(r[d]) * r[d];
    if (s <= 0) continue;
    const double inv = 1.0 / std::sqrt(s);
    for (int64_t d = 0; d < D; ++d) r[d] = float(r[d] * inv);
  }
}

using EmbedFn = std::function<Tensor(const std::vector<EmbedItem>&)>;

// Embeds every item with `fn` in batches of similar inputs (text-only items first, then those with images, each
// by text length: less padding), returns (N, D) in index order, L2-normalised. A batch that fails is retried
// item by item so the error names the one that failed.
Tensor embed_all(const ItemIndex& ix, const EmbedFn& fn, int64_t dim, int64_t batch_size, const std::string& who,
                 const EvalRunOptions& opt) {
  const int64_t N = int64_t(ix.items.size());
  std::vector<int64_t> order(static_cast<size_t>(N));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const EmbedItem &x = ix.items[size_t(a)], &y = ix.items[size_t(b)];
    return std::make_pair(x.image.empty(), x.text.size()) < std::make_pair(y.image.empty(), y.text.size());
  });
  // Text-only items and items with images go in separate calls: Phi-3's su-scaled RoPE takes its factors from a
  // batch's padded length (as the reference does), so a short text batched with an image (757 tokens at 4 crops)
  // would embed differently than alone. The images go first: they are the slow part, so the rate the progress
  // shows from the start gives a time left that errs long, not short.
  const int64_t first_text = std::find_if(order.begin(), order.end(), [&](int64_t k) {
                               return ix.items[size_t(k)].image.empty();
                             }) - order.begin();
  Tensor out({N, dim});
  if (opt.progress) opt.progress(who, 0, N);
  for (int64_t s = 0, n = 0; s < N; s += n) {
    n = std::min(batch_size, (s < first_text ? first_text : N) - s);
    std::vector<EmbedItem> batch;
    for (int64_t i = 0; i < n; ++i) batch.push_back(ix.items[size_t(order[size_t(s + i)])]);
    Tensor e;
    try {
      e = fn(batch);
    } catch (const Error&) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = order[size_t(s + i)];
        try {
          fn({batch[size_t(i)]});
        } catch (const Error& e1) {
          fail("{}: the {} cannot embed this {}: {}", ix.first_use[size_t(k)], who,
               batch[size_t(i)].image.empty() ? "text" : "text and image", e1.what());
        }
      }
      throw;
    }
    XV_CHECK(e.ndim() == 2 && e.dim(0) == n && e.dim(1) == dim, "{}: embeddings of shape {}, expected ({}, {})", who,
             shape_str(e.shape()), n, dim);
    for (int64_t i = 0; i < n; ++i)
      std::copy(e.data<float>() + i * dim, e.data<float>() + (i + 1) * dim, out.data<float>() + order[size_t(s + i)] * dim);
    if (opt.progress) opt.progress(who, s + n, N);
  }
  normalize_rows(out);
  return out;
}

// Gold ranks of one task's queries against embeddings E (N, D), unit rows.
std::vector<int64_t> task_ranks(const std::vector<std::vector<int32_t>>& rows, const Tensor& E) {
  const int64_t D = E.dim(1);
  std::vector<int64_t> ranks(rows.size());
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t q = 0; q < int64_t(rows.size()); ++q) {
    const auto& row = rows[size_t(q)];
    const float* qv = E.data<float>() + int64_t(row[0]) * D;
    std::vector<double> scores(row.size() - 1);
    for (size_t c = 1; c < row.size(); ++c) {
      const float* cv = E.data<float>() + int64_t(row[c]) * D;
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += double(qv[d]) * cv[d];
      scores[c - 1] = s;
    }
    ranks[size_t(q)] = gold_rank(scores.data(), int64_t(scores.size()));
  }
  return ranks;
}

}  // namespace

namespace {

// The benchmark scored with two embedding functions: the teacher ("before") and, when given, the student
// ("after"); `chunk` texts per call.
EvalResults run_with(const EmbedFn& teacher, const EmbedFn* student, const std::string& arch, int64_t dim,
                     int64_t chunk, const Benchmark& b, const EvalRunOptions& opt) {
  XV_CHECK(opt.batch_size >= 1, "eval: --batch-size must be at least 1, found {}", opt.batch_size);
  const ItemIndex ix = index_items(b);
  const bool with_student = student != nullptr;
  EvalResults r;
  r.benchmark = b.dir;
  r.benchmark_name = b.name;
  r.notes = b.notes;
  r.arch = arch;
  r.dim = dim;
  r.has_after = with_student;
  r.unique_texts = int64_t(ix.items.size());
  r.unique_images = ix.images;
  r.english_texts = int64_t(ix.english.size());

  const auto t0 = std::chrono::steady_clock::now();
  // The teacher: the base model (the adapter off).
  const Tensor T = embed_all(ix, teacher, r.dim, chunk, "teacher", opt);
  Tensor S;
  if (with_student) S = embed_all(ix, *student, r.dim, chunk, "student", opt);
  r.embed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  for (size_t t = 0; t < b.tasks.size(); ++t) {
    const BenchmarkTask& bt = b.tasks[t];
    TaskResult tr;
    tr.name = bt.name;
    tr.language = bt.language;
    tr.direction = bt.direction;
    tr.task_type = bt.task_type;
    tr.queries = int64_t(bt.queries.size());
    tr.candidates = bt.num_candidates;
    tr.ranks_before = task_ranks(ix.rows[t], T);
    tr.before = rank_metrics(tr.ranks_before);
    if (with_student) {
      tr.ranks_after = task_ranks(ix.rows[t], S);
      tr.after = rank_metrics(tr.ranks_after);
    }
    r.tasks.push_back(std::move(tr));
  }
  if (with_student && !ix.english.empty()) {
    const int64_t D = r.dim;
    double sum = 0;
    for (const int32_t i : ix.english) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += double(T.data<float>()[i * D + d]) * S.data<float>()[i * D + d];
      sum += dot;
    }
    r.english_cosine = sum / double(ix.english.size());
  }
  return r;
}

}  // namespace

namespace {

// Before anything loads: the models in f32 (the teacher; with an adapter also the student being merged and the
// merged student, three at once) and the embeddings of every distinct text (twice with an adapter) must fit
// in memory, and the merged student (a temporary model folder) on the temporary folder's disk.
void check_resources(const std::string& model_dir, bool adapter, const Benchmark& b) {
  const uint64_t weights = 4 * uint64_t(WeightStore::open_dir(model_dir).elements());
  const std::string mt = read_model_type((fs::path(model_dir) / "config.json").string());
  // (Another model type: the loader below names it; the embeddings are then left out of the check.)
  const int64_t dim = mt == "bert"     ? load_bert_config(model_dir).hidden_size
                      : mt == "phi3_v" ? load_phi3v_config(model_dir).hidden_size
                                       : 0;
  const ItemIndex ix = index_items(b);
  const uint64_t texts = uint64_t(ix.items.size());
  if (ix.images > 0 && (mt == "bert" || mt == "phi3_v"))
    XV_CHECK(backbone(mt).images, "{}: task '{}' has images, but the {} model {} has no image path: evaluate it on "
             "text-only tasks, or with a model that embeds images (phi3_v)",
             ix.first_image_where, ix.first_image_task, mt, model_dir);
  const uint64_t embeddings = texts * uint64_t(std::max<int64_t>(dim, 1)) * 4 * (adapter ? 2 : 1);
  require_memory(weights * (adapter ? 3 : 1) + embeddings,
                 fmt::format("eval: {} ({} in f32{}) and the embeddings of {} texts and images", model_dir, human_bytes(weights),
                             adapter ? ", three copies while the adapter is merged" : "", texts),
                 ": use a machine with more memory, or a benchmark with fewer texts");
  if (adapter)
    require_disk(fs::temp_directory_path().string(), weights,
                 "eval: the student with the adapter merged (a temporary model folder)",
                 ": free some space there, or point TMPDIR at a folder with more room");
}

}  // namespace

EvalResults evaluate(const std::string& model_dir, const std::string& adapter_dir, const Benchmark& b,
                     const EvalRunOptions& opt) {
  require_dir(model_dir, "model folder");
  if (!adapter_dir.empty()) require_dir(adapter_dir, "adapter folder");
  check_resources(model_dir, !adapter_dir.empty(), b);
  // Both sides run the inference pipeline (models/embedder.h: what `xvlm2vec embed` and a deployment run,
  // batches in parallel); the student is the model with the adapter merged in, in a temporary folder.
  const auto teacher_model = Embedder::load(model_dir);
  std::unique_ptr<Embedder> student_model;
  std::string merged;
  if (!adapter_dir.empty()) {
    LoraConfig lc;
    lc.targets = default_lora_targets(read_model_type((fs::path(model_dir) / "config.json").string()));
    auto model = KdModel::load(model_dir, "lora", lc, 0);
    model->load_adapter(adapter_dir);
    merged = (fs::temp_directory_path() / fmt::format("xvlm2vec-eval-merged-{}", ::getpid())).string();
    std::error_code ec;
    fs::remove_all(merged, ec);
    model->save_merged(merged);
    student_model = Embedder::load(merged);
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      if (!dir.empty()) fs::remove_all(dir, ec);
    }
  } cleanup{merged};
  auto fn = [&](const Embedder& e) {
    return [&e, &opt](const std::vector<EmbedItem>& items) {
      EmbedOptions eo;
      eo.batch_size = opt.batch_size;
      eo.truncate = opt.truncate;
      return e.embed(items, eo);
    };
  };
  const EmbedFn teacher = fn(*teacher_model);
  EmbedFn student;
  if (student_model) student = fn(*student_model);
  // Many batches per call, so that the embedder runs them in parallel.
  EvalResults r = run_with(teacher, student_model ? &student : nullptr, teacher_model->arch(), teacher_model->dim(),
                           opt.batch_size * 16, b, opt);
  r.model = model_dir;
  r.adapter = adapter_dir;
  return r;
}

}  // namespace xv
