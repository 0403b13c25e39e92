#include "models/embedder.h"

#include <algorithm>
#include <filesystem>
#include <atomic>
#include <exception>
#include <numeric>

#include <nlohmann/json.hpp>

#include "models/bert.h"
#include "models/pooling.h"
#include "core/file_util.h"
#include "image/image.h"
#include "core/model_config.h"
#include "models/phi3v.h"
#include "tokenizer/tokenizer.h"
#include "kernels/ops.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

// Right-pads rows of ids into (B, T) with `pad`, and the (B, T) mask.
void pad_batch(const std::vector<std::vector<int32_t>>& rows, int32_t pad, std::vector<int32_t>* ids,
               std::vector<float>* mask, int64_t* T) {
  size_t t = 0;
  for (const auto& r : rows) t = std::max(t, r.size());
  *T = int64_t(t);
  ids->assign(rows.size() * t, pad);
  mask->assign(rows.size() * t, 0.0f);
  for (size_t b = 0; b < rows.size(); ++b)
    for (size_t i = 0; i < rows[b].size(); ++i) {
      (*ids)[b * t + i] = rows[b][i];
      (*mask)[b * t + i] = 1.0f;
    }
}

// The rows of the output a batch's embeddings go to: its items' indices, as an I32 tensor on device d.
Tensor item_rows(const std::vector<size_t>& idx, Device d) {
  return Tensor::indices(std::vector<int32_t>(idx.begin(), idx.end()), d);
}

// Runs `fn` over batches of indices sorted by decreasing length (less padding), reporting progress.
// With several batches per thread, whole batches run concurrently, one per thread, and the ops inside
// run single-threaded (nested OpenMP regions are inactive; OpenBLAS's OpenMP build stays serial inside a
// parallel region): no barrier per op, which matters on few cores. Results do not depend on this: every
// op reduces in the same order whatever the thread count.
template <typename Fn>
void for_batches(const std::vector<size_t>& lengths, const EmbedOptions& opt, Fn fn) {
  std::vector<size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  const size_t bs = size_t(std::max<int64_t>(1, opt.batch_size));
  std::vector<std::vector<size_t>> batches;
  for (size_t s = 0; s < order.size(); s += bs)
    batches.emplace_back(order.begin() + long(s), order.begin() + long(std::min(order.size(), s + bs)));
  const int threads = ops::num_threads();
  const bool across = threads > 1 && batches.size() >= size_t(2 * threads);
  int64_t done = 0;
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#pragma omp parallel for schedule(dynamic) if (across)
  for (size_t k = 0; k < batches.size(); ++k) {
    if (failed.load()) continue;  // after an error, the remaining batches are skipped
    try {
      fn(batches[k]);
    } catch (...) {
      failed = true;
#pragma omp critical(xv_embed_error)
      if (!error) error = std::current_exception();
    }
#pragma omp critical(xv_embed_progress)
    {
      done += int64_t(batches[k].size());
      if (opt.progress) opt.progress(done, int64_t(order.size()));
    }
  }
  if (error) std::rethrow_exception(error);
}

// The sentence-transformers pipeline of a model folder (modules.json): the pooling mode of its Pooling
// module and whether a Normalize module follows. Without modules.json: mean pooling, no normalisation.
struct StPipeline {
  bool cls = false;        // pooling_mode_cls_token instead of the mean
  bool normalize = false;  // a Normalize module is listed
};

StPipeline read_st_pipeline(const std::string& dir) {
  StPipeline p;
  const std::string modules = (fs::path(dir) / "modules.json").string();
  std::error_code ec;
  if (!fs::exists(modules, ec)) return p;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(modules));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", modules, e.what());
  }
  XV_CHECK(j.is_array(), "{}: expected a list of modules", modules);
  for (const auto& m : j) {
    XV_CHECK(m.is_object() && m.contains("type") && m["type"].is_string(), "{}: each module needs a 'type'", modules);
    const std::string type = m["type"].get<std::string>();
    if (type.find("Normalize") != std::string::npos) p.normalize = true;
    if (type.find("Pooling") == std::string::npos) continue;
    const std::string sub = m.contains("path") && m["path"].is_string() ? m["path"].get<std::string>() : "";
    const std::string cfg = (fs::path(dir) / sub / "config.json").string();
    if (!fs::exists(cfg, ec)) continue;  // sentence-transformers' default: mean
    nlohmann::json c;
    try {
      c = nlohmann::json::parse(read_file(cfg));
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", cfg, e.what());
    }
    auto on = [&](const char* k) { return c.contains(k) && c[k].is_boolean() && c[k].get<bool>(); };
    XV_CHECK(!on("pooling_mode_max_tokens") && !on("pooling_mode_mean_sqrt_len_tokens") &&
                 !on("pooling_mode_weightedmean_tokens") && !on("pooling_mode_lasttoken"),
             "{}: only mean or CLS pooling is supported", cfg);
    p.cls = on("pooling_mode_cls_token");
    XV_CHECK(!(p.cls && on("pooling_mode_mean_tokens")), "{}: CLS and mean pooling together are not supported", cfg);
  }
  return p;
}

class BertEmbedder : public Embedder {
 public:
  BertEmbedder(const std::string& dir, Device d)
      : model_(BertModel::load(dir, LoadOptions{d, DType::F32, false})),
        tok_(Tokenizer::from_file((fs::path(dir) / "tokenizer.json").string())),
        st_(read_st_pipeline(dir)) {}
  const std::string& arch() const override { return arch_; }
  int64_t dim() const override { return model_.cfg.hidden_size; }

  Tensor embed(const std::vector<EmbedItem>& items, const EmbedOptions& opt) const override {
    const int64_t C = dim(), limit = model_.cfg.max_seq_length;
    std::vector<std::vector<int32_t>> ids(items.size());
    std::vector<size_t> lengths(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      XV_CHECK(items[i].image.empty(), "item {}: the bert backbone embeds text only, but an image was given", i + 1);
      ids[i] = tok_->encode(items[i].text, true);
      XV_CHECK(!ids[i].empty(), "item {}: the text gives no tokens (the tokenizer adds no special tokens)", i + 1);
      if (int64_t(ids[i].size()) > limit) {
        XV_CHECK(opt.truncate, "item {}: text has {} tokens, longer than the model's limit of {} (use --truncate to cut it)",
                 i + 1, ids[i].size(), limit);
        const int32_t last = ids[i].back();  // [SEP]
        ids[i].resize(size_t(limit));
        ids[i].back() = last;
      }
      lengths[i] = ids[i].size();
    }
    Tensor out({int64_t(items.size()), C}, DType::F32, model_.device);
    for_batches(lengths, opt, [&](const std::vector<size_t>& idx) {
      std::vector<std::vector<int32_t>> rows;
      for (size_t i : idx) rows.push_back(ids[i]);
      std::vector<int32_t> flat;
      std::vector<float> mask;
      int64_t T;
      pad_batch(rows, int32_t(model_.cfg.pad_token_id), &flat, &mask, &T);
      const int64_t B = int64_t(idx.size());
      Tensor h = model_.forward(flat, mask, B, T);
      const Tensor pooled = st_.cls ? pool_at(h, std::vector<int64_t>(idx.size(), 0), T)
                                    : mean_pool(h, model_.input_mask(mask, B, T), B, T);
      ops::copy_rows(pooled, item_rows(idx, model_.device), out);
    });
    if (opt.normalize || st_.normalize) ops::l2_normalize(out);
    return std::move(out).to(Device::cpu());
  }

 private:
  std::string arch_ = "bert";
  BertModel model_;
  std::unique_ptr<Tokenizer> tok_;
  StPipeline st_;
};

class Phi3VEmbedder : public Embedder {
 public:
  Phi3VEmbedder(const std::string& dir, Device d)
      : model_(Phi3VModel::load(dir, LoadOptions{d, DType::F32, false})), tok_(Tokenizer::from_file((fs::path(dir) / "tokenizer.json").string())) {
    const std::string pp = (fs::path(dir) / "preprocessor_config.json").string();
    if (fs::exists(pp)) img_cfg_ = phi3v_image_config_from_json(pp);
  }
  const std::string& arch() const override { return arch_; }
  int64_t dim() const override { return model_.cfg.hidden_size; }

  Tensor embed(const std::vector<EmbedItem>& items, const EmbedOptions& opt) const override {
    const int64_t C = dim(), limit = model_.cfg.max_position_embeddings;
    // First pass: prompt ids, for which an image only needs its token count (from its size). Pixels are
    // decoded again batch by batch, so memory holds one batch of crops, not the whole input.
    std::vector<std::vector<int32_t>> ids(items.size());
    std::vector<size_t> lengths(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      std::string text = items[i].text;
      std::vector<int64_t> ntok;
      if (!items[i].image.empty()) {
        const Image img = load_image(items[i].image);
        const Phi3VHdSize hd = phi3v_hd_size(img.width, img.height, img_cfg_.num_crops);
        ntok.push_back(phi3v_num_img_tokens(hd.height, hd.width));
        if (text.find("<|image_1|>") == std::string::npos) text = "<|image_1|> " + text;
      }
      ids[i] = phi3v_prompt_ids(*tok_, text, ntok);
      XV_CHECK(!ids[i].empty(), "item {}: the input gives no tokens (the tokenizer adds no <s>)", i + 1);
      XV_CHECK(int64_t(ids[i].size()) <= limit,
               "item {}: input has {} tokens, longer than the model's limit of {} (max_position_embeddings)", i + 1,
               ids[i].size(), limit);
      lengths[i] = ids[i].size();
    }
    Tensor out({int64_t(items.size()), C}, DType::F32, model_.device);
    for_batches(lengths, opt, [&](const std::vector<size_t>& idx) {
      std::vector<std::vector<int32_t>> rows;
      std::vector<Phi3VImageInputs> imgs(idx.size());
      std::vector<std::vector<const Phi3VImageInputs*>> batch_imgs(idx.size());
      for (size_t b = 0; b < idx.size(); ++b) {
        const size_t i = idx[b];
        rows.push_back(ids[i]);
        if (items[i].image.empty()) continue;
        imgs[b] = phi3v_preprocess(load_image(items[i].image), img_cfg_);
        batch_imgs[b].push_back(&imgs[b]);
      }
      std::vector<int32_t> flat;
      std::vector<float> mask;
      int64_t T;
      pad_batch(rows, int32_t(model_.cfg.pad_token_id), &flat, &mask, &T);
      Tensor h = model_.forward(flat, mask, int64_t(idx.size()), T, batch_imgs);
      // Last non-pad token of each row (right padding).
      std::vector<int64_t> last;
      for (const auto& r : rows) last.push_back(int64_t(r.size()) - 1);
      ops::copy_rows(pool_at(h, last, T), item_rows(idx, model_.device), out);
    });
    if (opt.normalize) ops::l2_normalize(out);
    return std::move(out).to(Device::cpu());
  }

 private:
  std::string arch_ = "phi3_v";
  Phi3VModel model_;
  std::unique_ptr<Tokenizer> tok_;
  Phi3VImageConfig img_cfg_;
};

}  // namespace

std::unique_ptr<Embedder> Embedder::load(const std::string& model_dir, Device device) {
  const std::string cfg = (fs::path(model_dir) / "config.json").string();
  require_dir(model_dir, "model folder");
  const std::string mt = read_model_type(cfg);
  if (mt == "bert") return std::make_unique<BertEmbedder>(model_dir, device);
  if (mt == "phi3_v") return std::make_unique<Phi3VEmbedder>(model_dir, device);
  fail("{}: field 'model_type' is '{}', expected 'bert' or 'phi3_v'", cfg, mt);
}

}  // namespace xv
