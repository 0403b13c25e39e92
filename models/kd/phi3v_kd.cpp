// KdModel for the phi3_v backbone: a LoRA student over the frozen Phi-3-vision (decoder and CLIP tower),
// pooled at the last non-pad token after the final norm; the teacher is the same model with its adapters
// off. A pair's image serves both sides: the tower runs once per step for the student (its backward takes
// the sum of both sides' gradients) and once for the teacher (only when the tower has adapters).
//
// trainable: full — every weight the embedding path uses trains (Phi3VGrads), no adapters:
//  * trainable() lists the decoder (embed_tokens, per layer input_layernorm, qkv_proj, o_proj,
//    post_attention_layernorm, gate_up_proj, down_proj; model.norm), the image side's glb_GN, sub_GN and
//    img_projection.0/.2, and the CLIP layers that run (patch/class/position embeddings, pre_layrnorm, per
//    layer layer_norm1/2, out_proj, fc1, fc2) under the checkpoint's names. The CLIP attention's q/k/v are
//    fused at load: they appear as "<layer>.self_attn.qkv_proj.weight" (3C', C') and ".bias" (3C'), rows
//    [q_proj | k_proj | v_proj]; save_merged splits them back into the checkpoint's own names.
//    lm_head and the tower's last layer (and post_layernorm) feed nothing and are not trained.
//  * The teacher cannot be the student (its weights move): forward_backward requires teacher targets from a
//    teacher cache (KdStepOptions::teacher_en, data.teacher_cache), and refuses the image-prefix loss (the
//    cache holds no prefix targets). teacher_embed uses the current weights.
//  * There is no adapter: save_adapter and load_adapter fail; export with save_merged.

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/atomic_dir.h"
#include "models/bert.h"  // mean_pool, mean_pool_backward
#include "core/dtype.h"
#include "image/image.h"
#include "models/kd/kd_model.h"
#include "models/peft_adapter.h"
#include "models/phi3v.h"
#include "core/safetensors.h"
#include "tokenizer/tokenizer.h"
#include "kernels/ops.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

// One side (English or other-language) of a batch, right-padded with the pad id.
struct Side {
  std::vector<int32_t> ids;   // (B, T), image placeholders negative
  std::vector<float> mask;    // (B, T) 1 for real tokens
  std::vector<float> prefix;  // (B, T) 1 at every position up to and including the row's last <s>
  std::vector<int64_t> last;  // (B) the last real token
  int64_t B = 0, T = 0;
};

// A micro-batch made ready: the images (one per pair that has one) and both sides' prompt ids.
struct Prepared {
  std::vector<Phi3VImageInputs> images;
  std::vector<int> row_image;  // (B) index into images, -1 for a text-only pair
  std::vector<int64_t> tok0;   // per image: its first row in the stacked image tokens
  Side en, xx;
};

// One pair made ready ahead of the step by the data reader's workers: its image and prompt ids.
struct Phi3VPrepared : PreparedInputs {
  std::shared_ptr<const Phi3VImageInputs> image;  // null for a text-only pair
  std::vector<int32_t> en, xx;                    // prompt ids, image placeholders included
};

// Input embeddings' image rows of each row b: its image's slice of the stacked tokens `tok` (n, C).
std::vector<std::vector<ImageTokens>> row_tokens(const Prepared& p, const Tensor& tok) {
  std::vector<std::vector<ImageTokens>> out(p.row_image.size());
  const int64_t C = tok.empty() ? 0 : tok.dim(1);
  for (size_t b = 0; b < p.row_image.size(); ++b)
    if (const int i = p.row_image[b]; i >= 0)
      out[b].push_back({tok.ptr() + p.tok0[size_t(i)] * C, p.images[size_t(i)].num_img_tokens});
  return out;
}

std::vector<std::vector<float*>> row_dtokens(const Prepared& p, Tensor& dtok) {
  std::vector<std::vector<float*>> out(p.row_image.size());
  const int64_t C = dtok.dim(1);
  for (size_t b = 0; b < p.row_image.size(); ++b)
    if (const int i = p.row_image[b]; i >= 0) out[b].push_back(dtok.ptr() + p.tok0[size_t(i)] * C);
  return out;
}

// hidden (B, T, C) -> the rows at side.last: (B, C).
Tensor last_rows(const Tensor& hidden, const Side& s) {
  const int64_t C = hidden.dim(-1);
  Tensor out({s.B, C});
  for (int64_t b = 0; b < s.B; ++b) {
    const float* src = hidden.ptr() + (b * s.T + s.last[size_t(b)]) * C;
    std::copy(src, src + C, out.ptr() + b * C);
  }
  return out;
}

// The adjoint: dhidden (B, T, C) += dpooled (B, C) at side.last.
void last_rows_backward(const Tensor& dpooled, const Side& s, Tensor& dhidden) {
  const int64_t C = dpooled.dim(-1);
  for (int64_t b = 0; b < s.B; ++b) {
    float* dst = dhidden.ptr() + (b * s.T + s.last[size_t(b)]) * C;
    const float* src = dpooled.ptr() + b * C;
    for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
  }
}

class Phi3VKdModel : public KdModel {
 public:
  Phi3VKdModel(const std::string& dir, const std::string& trainable, const LoraConfig& lcfg, uint64_t seed,
               bool defer_frozen)
      : dir_(dir), lcfg_(lcfg), seed_(seed), defer_(defer_frozen && trainable == "lora"),
        model_(Phi3VModel::load(dir, defer_)),
        tok_(Tokenizer::from_file((fs::path(dir) / "tokenizer.json").string())) {
    XV_CHECK(trainable == "lora" || trainable == "full", "phi3_v: trainable '{}' is not supported (lora or full)",
             trainable);
    full_ = trainable == "full";
    const std::string pp = (fs::path(dir) / "preprocessor_config.json").string();
    if (fs::exists(pp)) img_cfg_ = phi3v_image_config_from_json(pp);
    if (full_) {  // no adapters: every slot of the pointer maps is empty
      std::array<int, kPhi3Slots> nd;
      nd.fill(-1);
      std::array<int, kClipSlots> nc;
      nc.fill(-1);
      lora_.dec.assign(model_.decoder.layers.size(), nd);
      lora_.clip.assign(model_.vision.clip.layers.size(), nc);
      grads_ = Phi3VGrads::zeros_like(model_);
    } else {
      lora_ = Phi3VLora::create(model_, lcfg, seed);
    }
    bos_ = tok_->token_to_id("<s>");
    if (bos_ < 0) bos_ = 1;  // Phi-3's bos_token_id
  }
  const std::string& arch() const override { return arch_; }
  int64_t dim() const override { return model_.cfg.hidden_size; }

  std::vector<TrainableTensor> trainable() override {
    std::vector<TrainableTensor> out;
    if (full_) {
      for (auto& [name, w, g] : full_tensors()) out.push_back({name, w, g});
      return out;
    }
    for (auto& a : lora_.adapters) {
      out.push_back({a.a_name(), &a.A, &a.dA});
      out.push_back({a.b_name(), &a.B, &a.dB});
    }
    return out;
  }
  void zero_grad() override {
    if (full_) grads_.zero();
    lora_.zero_grad();
  }

  std::shared_ptr<const PreparedInputs> prepare(const TrainPair& pair) const override {
    return prepare_one(pair, 0, true);
  }

  KdLossTerms forward_backward(const std::vector<TrainPair>& batch, const KdStepOptions& opt) override {
    XV_CHECK(!batch.empty(), "kd step: empty batch");
    XV_CHECK(!full_ || opt.teacher_en,
             "kd step: trainable 'full' needs teacher targets from a teacher cache (set data.teacher_cache, built by "
             "`xvlm2vec corpus cache-teacher`): with every weight trained, the student cannot be its own teacher");
    XV_CHECK(!full_ || !opt.image_prefix_loss,
             "kd step: trainable 'full' does not support the image-prefix loss (image_prefix_loss): its teacher "
             "targets would need the original model, and the teacher cache holds none; turn it off");
    const Prepared p = prepare_batch(batch, true, opt.image_prefix_loss);
    const bool has_img = !p.images.empty();
    const bool prefix = opt.image_prefix_loss && has_img;
    const bool train_vis = has_img && (full_ || lora_.vision_adapted());
    // The tower's units are walked (forward, and backward when it has adapters) when this micro-batch has
    // images, or when another rank's may (opt.vision_units): the ranks must gather the same units.
    const bool walk_vis = has_img || (units_ && opt.vision_units);
    const bool walk_vis_bwd = walk_vis && (full_ || lora_.vision_adapted());
    const bool need_teacher = !opt.teacher_en || prefix;
    const int64_t C = dim(), B = p.en.B;
    // Independent dropout streams for the vision pass and the two decoder passes of this micro-batch.
    const uint64_t s = opt.dropout_seed;
    const LoraRun run_en{s ? s * 4 + 1 : 0}, run_xx{s ? s * 4 + 2 : 0}, run_vis{s ? s * 4 + 3 : 0};
    Phi3DecoderLora dl = lora_.decoder();
    ClipLora cl = lora_.vision();
    const Phi3Decoder& dec = model_.decoder;
    const ClipVision& cv = model_.vision.clip;
    // Unit by unit (frozen_units; no-ops without a UnitAccess): each unit is acquired once for the teacher pass
    // and the student passes. Forward: the CLIP groups, the projector, the embeddings, the decoder layers (the
    // last one, holding model.norm, stays for backward). Backward: the decoder layers last first, then, when the
    // tower trains, the projector and the CLIP groups last first.
    const int64_t L = int64_t(dec.layers.size()), G = clip_groups();
    const int u_proj = int(G), u_emb = int(G + 1);
    auto u_layer = [&](int64_t l) { return int(G + 2 + l); };
    const int after_decoder = walk_vis_bwd ? u_proj : -1;  // backward's unit after the decoder's

    // Vision: the student's tokens (activations kept for backward when the tower trains) and, when the tower
    // has adapters, the teacher's (adapters off); otherwise one pass serves both.
    Phi3VVisionActs vacts;
    vacts.clip.checkpointing = opt.checkpointing;
    vacts.clip.full = full_;
    Tensor s_tok, t_tok;
    if (walk_vis) {  // without images of its own, a rank still gathers these units with the others
      Phi3VCropBatch cb;
      if (has_img) {
        std::vector<const Phi3VImageInputs*> imgs;
        for (const auto& im : p.images) imgs.push_back(&im);
        cb = model_.vision.stack_crops(imgs);
      }
      const bool teacher_vis = need_teacher && train_vis;
      const bool keep_emb = train_vis && full_;  // the embeddings' inputs, for their backward
      Tensor xs, xt;  // (n_crops * (1 + num_patches), C')
      for (int64_t g = 0; g < G; ++g) {
        unit_acquire(units_, int(g), g + 1 < G ? int(g + 1) : u_proj);
        if (has_img && g == 0) {
          xs = cv.embed(cb.pixels.ptr(), cb.n_crops, keep_emb ? &vacts.clip.cols : nullptr,
                        keep_emb ? &vacts.clip.x_emb : nullptr);
          if (teacher_vis) xt = xs;
          if (train_vis) cv.begin_acts(vacts.clip, cb.n_crops);
        }
        for (int64_t l = group_begin(g); has_img && l < group_end(g); ++l) {
          if (train_vis) cv.layer_forward_kept(l, xs, vacts.clip, &cl, run_vis);
          else cv.layer_forward(l, xs, cb.n_crops, nullptr, run_vis, nullptr);
          if (teacher_vis) cv.layer_forward(l, xt, cb.n_crops, nullptr, {}, nullptr);
        }
        unit_release(units_, int(g));
      }
      unit_acquire(units_, u_proj, u_emb);
      if (has_img) {
        s_tok = model_.vision.project(cv.drop_cls(xs, cb.n_crops), cb, train_vis ? &vacts : nullptr);
        if (teacher_vis) t_tok = model_.vision.project(cv.drop_cls(xt, cb.n_crops), cb, nullptr);
        else if (need_teacher) t_tok = s_tok;
      }
      unit_release(units_, u_proj);
    }

    // The decoder: the teacher (adapters off; its targets, unless the cache gives them) and the two student
    // passes, layer by layer.
    Phi3Acts t_acts, acts_en, acts_xx;
    acts_en.checkpointing = acts_xx.checkpointing = opt.checkpointing;
    unit_acquire(units_, u_emb, u_layer(0));
    Tensor h_t;
    if (need_teacher) h_t = model_.embed_inputs(p.en.ids, B, p.en.T, row_tokens(p, t_tok));
    Tensor h_en = model_.embed_inputs(p.en.ids, B, p.en.T, row_tokens(p, s_tok));
    Tensor h_xx = model_.embed_inputs(p.xx.ids, B, p.xx.T, row_tokens(p, s_tok));
    unit_release(units_, u_emb);
    if (need_teacher) dec.begin_acts(t_acts, p.en.mask, B, p.en.T, false);
    dec.begin_acts(acts_en, p.en.mask, B, p.en.T, true);
    dec.begin_acts(acts_xx, p.xx.mask, B, p.xx.T, true);
    for (int64_t l = 0; l < L; ++l) {
      unit_acquire(units_, u_layer(l), l + 1 < L ? u_layer(l + 1) : L > 1 ? u_layer(L - 2) : after_decoder);
      if (need_teacher) dec.layer_forward(l, h_t, p.en.mask, B, p.en.T, t_acts.cos, t_acts.sin, nullptr, {}, nullptr);
      dec.layer_forward_kept(l, h_en, acts_en, &dl, run_en);
      dec.layer_forward_kept(l, h_xx, acts_xx, &dl, run_xx);
      if (l + 1 < L) unit_release(units_, u_layer(l));
    }
    Tensor t_en, t_pre;
    if (need_teacher) {
      dec.final_norm(h_t, nullptr);
      t_en = last_rows(h_t, p.en);
      if (prefix) t_pre = mean_pool(h_t, p.en.prefix, B, p.en.T);
      h_t = Tensor();
    }
    dec.final_norm(h_en, &acts_en);
    dec.final_norm(h_xx, &acts_xx);
    if (opt.teacher_en) {
      XV_CHECK(opt.teacher_en->numel() == B * C, "kd step: teacher cache rows do not match the batch ({} x {})", B, C);
      t_en = *opt.teacher_en;
      t_en.reshape({B, C});
    }

    // L = 1/2 [MSE(S(en), T(en)) + MSE(S(xx), T(en))], or the mean of those and the two prefix terms.
    KdLossTerms out;
    const int64_t n = B * C;
    const float w = (prefix ? 0.25f : 0.5f) * opt.loss_scale;
    auto term = [&](const Tensor& s_, const Tensor& t_, Tensor& d) {
      d = Tensor(s_.shape);
      ops::mse_loss(s_.ptr(), t_.ptr(), d.ptr(), n, w);
      return ops::mse_loss(s_.ptr(), t_.ptr(), nullptr, n, 1.0f);
    };
    Tensor d_en, d_xx, dp_en, dp_xx;
    out.loss_en = term(last_rows(h_en, p.en), t_en, d_en);
    out.loss_xx = term(last_rows(h_xx, p.xx), t_en, d_xx);
    Tensor dh_en({B, p.en.T, C}), dh_xx({B, p.xx.T, C});
    if (prefix) {
      out.prefix_en = term(mean_pool(h_en, p.en.prefix, B, p.en.T), t_pre, dp_en);
      out.prefix_xx = term(mean_pool(h_xx, p.xx.prefix, B, p.xx.T), t_pre, dp_xx);
      out.loss = 0.25 * (out.loss_en + out.loss_xx + out.prefix_en + out.prefix_xx);
      dh_en = mean_pool_backward(dp_en, p.en.prefix, B, p.en.T);
      dh_xx = mean_pool_backward(dp_xx, p.xx.prefix, B, p.xx.T);
    } else {
      out.loss = 0.5 * (out.loss_en + out.loss_xx);
    }
    last_rows_backward(d_en, p.en, dh_en);
    last_rows_backward(d_xx, p.xx, dh_xx);
    h_en = Tensor(), h_xx = Tensor();

    // Backward: both sides through the decoder, layer by layer; both sides' image-token gradients into one
    // tower backward.
    Tensor dtok;
    if (train_vis) dtok = Tensor(s_tok.shape);
    Phi3Grads* dg = full_ ? &grads_.decoder : nullptr;
    float* dembed = full_ ? grads_.decoder.embed.ptr() : nullptr;
    const bool need_dx = train_vis || full_;
    Tensor dx_en = dec.backward_begin(acts_en, dh_en, dl, dg);  // (B*T, C)
    Tensor dx_xx = dec.backward_begin(acts_xx, dh_xx, dl, dg);
    for (int64_t l = L - 1; l >= 0; --l) {
      if (l + 1 < L) unit_acquire(units_, u_layer(l), l > 0 ? u_layer(l - 1) : after_decoder);
      dec.layer_backward(l, acts_en, dx_en, dl, run_en, need_dx, dg);
      dec.layer_backward(l, acts_xx, dx_xx, dl, run_xx, need_dx, dg);
      unit_release(units_, u_layer(l));
    }
    acts_en = Phi3Acts{}, acts_xx = Phi3Acts{};
    if (need_dx) {  // the input embeddings' gradient: image rows to the tower, token rows to embed_tokens (full)
      const std::vector<std::vector<float*>> no_img;
      model_.embed_inputs_backward(p.en.ids, B, p.en.T, dx_en, train_vis ? row_dtokens(p, dtok) : no_img, dembed);
      model_.embed_inputs_backward(p.xx.ids, B, p.xx.T, dx_xx, train_vis ? row_dtokens(p, dtok) : no_img, dembed);
    }
    if (walk_vis_bwd) {  // as in forward: gathered with the others even without images of its own
      Phi3VVisionGrads* vg = full_ ? &grads_.vision : nullptr;
      ClipGrads* cg = full_ ? &grads_.vision.clip : nullptr;
      Tensor dxv;  // (n_crops * (1 + num_patches), C')
      unit_acquire(units_, u_proj, int(G - 1));
      if (train_vis) dxv = cv.backward_begin(vacts.clip, model_.vision.project_backward(vacts, dtok, vg), cl, cg);
      unit_release(units_, u_proj);
      for (int64_t g = G - 1; g >= 0; --g) {
        unit_acquire(units_, int(g), g > 0 ? int(g - 1) : -1);
        for (int64_t l = group_end(g) - 1; train_vis && l >= group_begin(g); --l)
          cv.layer_backward(l, vacts.clip, dxv, cl, run_vis, cg);
        unit_release(units_, int(g));
      }
      if (train_vis && cg) cv.embeddings_backward(vacts.clip, dxv, *cg);
    }
    return out;
  }

  std::vector<WeightUnit> frozen_units(const UnitOptions& o) override {
    if (full_) return {};
    XV_CHECK(o.vision_layers_per_unit >= 1 && o.vision_layers_per_unit <= 1024,
             "phi3_v units: vision_layers_per_unit must be in [1, 1024], got {}", o.vision_layers_per_unit);
    XV_CHECK(!model_.decoder.layers.empty(), "phi3_v units: the decoder has no layers");
    vision_per_unit_ = o.vision_layers_per_unit;
    std::vector<WeightUnit> u;
    auto unit = [&](std::string name, std::vector<Tensor*> tensors) { u.push_back({std::move(name), std::move(tensors), {}}); };
    ClipVision& c = model_.vision.clip;
    for (int64_t g = 0; g < clip_groups(); ++g) {
      const int64_t l0 = group_begin(g), l1 = group_end(g);
      std::vector<Tensor*> ts;
      if (g == 0) ts = {&c.patch_w, &c.class_emb, &c.pos_emb, &c.pre_ln_g, &c.pre_ln_b};
      for (int64_t l = l0; l < l1; ++l) {
        ClipLayer& y = c.layers[size_t(l)];
        for (Tensor* t : {&y.ln1_g, &y.ln1_b, &y.qkv_w, &y.qkv_b, &y.out_w, &y.out_b, &y.ln2_g, &y.ln2_b, &y.fc1_w,
                          &y.fc1_b, &y.fc2_w, &y.fc2_b})
          ts.push_back(t);
      }
      unit(l1 > l0 ? fmt::format("clip.{}-{}", l0, l1 - 1) : std::string("clip.embeddings"), std::move(ts));
    }
    Phi3VImageEmbedding& v = model_.vision;
    unit("projector", {&v.glb_GN, &v.sub_GN, &v.p0_w, &v.p0_b, &v.p2_w, &v.p2_b});
    Phi3Decoder& d = model_.decoder;
    unit("embeddings", {&d.embed});
    for (size_t l = 0; l < d.layers.size(); ++l) {
      Phi3Layer& y = d.layers[l];
      std::vector<Tensor*> ts = {&y.in_ln, &y.qkv_w, &y.o_w, &y.post_ln, &y.gate_up_w, &y.down_w};
      if (l + 1 == d.layers.size()) ts.push_back(&d.norm);  // the last unit holds model.norm
      unit("decoder." + std::to_string(l), std::move(ts));
    }
    if (defer_) {  // each unit read from the checkpoint when the wrapper asks
      std::map<const Tensor*, std::string> names;
      for_each_weight(d, v, [&](const std::string& n, Tensor& t) { names[&t] = n; });
      auto ws = std::make_shared<const WeightStore>(WeightStore::open_dir(dir_));
      for (WeightUnit& w : u) {
        std::vector<std::vector<std::string>> src;
        for (const Tensor* t : w.tensors) src.push_back(checkpoint_names(names.at(t)));
        w.load = checkpoint_loader(ws, w.tensors, std::move(src));
      }
    }
    return u;
  }
  void set_unit_access(UnitAccess* access) override { units_ = full_ ? nullptr : access; }

  Tensor teacher_embed(const std::vector<TrainPair>& batch) override {
    XV_CHECK(!batch.empty(), "teacher embed: empty batch");
    const Prepared p = prepare_batch(batch, false, false);
    std::vector<const Phi3VImageInputs*> imgs;
    for (const auto& im : p.images) imgs.push_back(&im);
    Tensor tok;
    if (!imgs.empty()) tok = model_.vision.forward_images(imgs, nullptr, nullptr, {});
    Tensor h = model_.embed_inputs(p.en.ids, p.en.B, p.en.T, row_tokens(p, tok));
    model_.decoder.forward(h, p.en.mask, p.en.B, p.en.T);
    return last_rows(h, p.en);
  }

  Tensor student_embed(const std::vector<std::string>& texts, bool normalize) override {
    XV_CHECK(!texts.empty(), "student embed: no input");
    std::vector<std::vector<int32_t>> rows;
    for (size_t i = 0; i < texts.size(); ++i) rows.push_back(prompt(texts[i], nullptr, fmt::format("input {}", i + 1)));
    const Side s = make_side(rows, false, "input");
    Phi3DecoderLora dl = lora_.decoder();
    Tensor h = model_.embed_inputs(s.ids, s.B, s.T, {});
    model_.decoder.forward(h, s.mask, s.B, s.T, &dl, nullptr, LoraRun{});
    Tensor e = last_rows(h, s);
    if (normalize) ops::l2_normalize(e.ptr(), e.dim(0), e.dim(1));
    return e;
  }

  // PEFT's formats (core/peft_adapter): the module paths are the checkpoint's, so an adapter merges into
  // "<module>.weight" of model.safetensors.
  void save_adapter(const std::string& dir) const override {
    XV_CHECK(!full_, "{}: full fine-tuning has no adapter; export the merged model instead", dir);
    std::vector<const LoraAdapter*> as;
    for (const auto& a : lora_.adapters) as.push_back(&a);
    save_peft_adapter(dir, as, lcfg_, dir_);
  }
  void load_adapter(const std::string& dir) override {
    XV_CHECK(!full_,
             "{}: cannot load an adapter into a model with trainable 'full' (full fine-tuning has no adapter)", dir);
    std::string w_path;
    const LoraConfig c = read_peft_adapter_config(dir, &w_path);
    Phi3VLora lora;
    try {
      lora = Phi3VLora::create(model_, c, seed_);
    } catch (const Error& e) {
      fail("{}/adapter_config.json: {}", dir, e.what());
    }
    load_peft_tensors(w_path, lora.adapters);
    lora_ = std::move(lora);
    lcfg_ = c;
  }
  void save_merged(const std::string& out) const override {
    if (full_) return save_merged_full(out);
    std::map<std::string, const LoraAdapter*> adapted;
    for (const auto& a : lora_.adapters) adapted[a.module + ".weight"] = &a;
    save_merged_model(dir_, out, adapted, kMergedRequired, kMergedOptional, false);
  }

 private:
  inline static const std::vector<std::string> kMergedRequired = {"config.json", "tokenizer.json"};
  inline static const std::vector<std::string> kMergedOptional = {
      "preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"};

  // fn(name, tensor) for every weight the embedding path uses, under the checkpoint's names (CLIP's q/k/v
  // fused: "<layer>.self_attn.qkv_proj.*", see the top), in the order full fine-tuning lists them. The same
  // walk over the model (Phi3Decoder, Phi3VImageEmbedding) and over its gradients (Phi3Grads,
  // Phi3VVisionGrads), whose fields carry the same names.
  template <typename Dec, typename Vis, typename F>
  static void for_each_weight(Dec& d, Vis& v, F fn) {
    fn("model.embed_tokens.weight", d.embed);
    for (size_t l = 0; l < d.layers.size(); ++l) {
      auto& L = d.layers[l];
      const std::string p = "model.layers." + std::to_string(l) + ".";
      fn(p + "input_layernorm.weight", L.in_ln);
      fn(p + "self_attn.qkv_proj.weight", L.qkv_w);
      fn(p + "self_attn.o_proj.weight", L.o_w);
      fn(p + "post_attention_layernorm.weight", L.post_ln);
      fn(p + "mlp.gate_up_proj.weight", L.gate_up_w);
      fn(p + "mlp.down_proj.weight", L.down_w);
    }
    fn("model.norm.weight", d.norm);
    const std::string vp = "model.vision_embed_tokens.";
    fn(vp + "glb_GN", v.glb_GN);
    fn(vp + "sub_GN", v.sub_GN);
    fn(vp + "img_projection.0.weight", v.p0_w);
    fn(vp + "img_projection.0.bias", v.p0_b);
    fn(vp + "img_projection.2.weight", v.p2_w);
    fn(vp + "img_projection.2.bias", v.p2_b);
    auto& c = v.clip;
    const std::string cp = vp + "img_processor.vision_model.";
    fn(cp + "embeddings.patch_embedding.weight", c.patch_w);
    fn(cp + "embeddings.class_embedding", c.class_emb);
    fn(cp + "embeddings.position_embedding.weight", c.pos_emb);
    fn(cp + "pre_layrnorm.weight", c.pre_ln_g);
    fn(cp + "pre_layrnorm.bias", c.pre_ln_b);
    for (size_t l = 0; l < c.layers.size(); ++l) {
      auto& L = c.layers[l];
      const std::string p = cp + "encoder.layers." + std::to_string(l) + ".";
      fn(p + "layer_norm1.weight", L.ln1_g);
      fn(p + "layer_norm1.bias", L.ln1_b);
      fn(p + "self_attn.qkv_proj.weight", L.qkv_w);  // fused q_proj, k_proj, v_proj
      fn(p + "self_attn.qkv_proj.bias", L.qkv_b);
      fn(p + "self_attn.out_proj.weight", L.out_w);
      fn(p + "self_attn.out_proj.bias", L.out_b);
      fn(p + "layer_norm2.weight", L.ln2_g);
      fn(p + "layer_norm2.bias", L.ln2_b);
      fn(p + "mlp.fc1.weight", L.fc1_w);
      fn(p + "mlp.fc1.bias", L.fc1_b);
      fn(p + "mlp.fc2.weight", L.fc2_w);
      fn(p + "mlp.fc2.bias", L.fc2_b);
    }
  }
  // The checkpoint tensors a weight of for_each_weight is made of: itself, or CLIP's q/k/v for a fused one
  // (the decoder's qkv_proj is fused in the checkpoint too).
  static std::vector<std::string> checkpoint_names(const std::string& name) {
    if (name.starts_with("model.layers.") ||
        !(name.ends_with("self_attn.qkv_proj.weight") || name.ends_with("self_attn.qkv_proj.bias")))
      return {name};
    const std::string stem = name.substr(0, name.rfind("qkv_proj.")), kind = name.ends_with(".bias") ? ".bias" : ".weight";
    return {stem + "q_proj" + kind, stem + "k_proj" + kind, stem + "v_proj" + kind};
  }

  struct FullTensor {
    std::string name;
    Tensor* w;
    Tensor* g;
  };
  // Every trained tensor with its gradient (trainable 'full').
  std::vector<FullTensor> full_tensors() {
    std::vector<FullTensor> out;
    for_each_weight(model_.decoder, model_.vision, [&](const std::string& n, Tensor& w) { out.push_back({n, &w, nullptr}); });
    size_t i = 0;
    for_each_weight(grads_.decoder, grads_.vision, [&](const std::string&, Tensor& g) { out[i++].g = &g; });
    return out;
  }

  // The current weights as the base checkpoint's model.safetensors: every tensor keeps its name, shape and
  // dtype (CLIP's fused qkv split back into q_proj/k_proj/v_proj); tensors the model does not use (lm_head,
  // the tower's last layer, post_layernorm) are copied as they are. The other files come from the base folder.
  void save_merged_full(const std::string& out) const;
  // Prompt ids of one text, with its image's placeholders when it has one: a text that names no
  // <|image_1|> gets "<|image_1|> " in front, as the embedder does.
  // `what` names the text in errors ("pair 3: the English text").
  std::vector<int32_t> prompt(const std::string& text, const Phi3VImageInputs* img, const std::string& what) const {
    std::string t = text;
    std::vector<int64_t> ntok;
    if (img) {
      ntok.push_back(img->num_img_tokens);
      if (t.find("<|image_1|>") == std::string::npos) t = "<|image_1|> " + t;
    }
    std::vector<int32_t> ids;
    try {
      ids = phi3v_prompt_ids(*tok_, t, ntok);
    } catch (const Error& e) {
      fail("{}: {}", what, e.what());
    }
    XV_CHECK(!ids.empty(), "{} gives no tokens (the tokenizer adds no <s>)", what);
    XV_CHECK(int64_t(ids.size()) <= model_.cfg.max_position_embeddings,
             "{} makes a prompt of {} tokens, more than the model's {} (max_position_embeddings)", what, ids.size(),
             model_.cfg.max_position_embeddings);
    return ids;
  }

  // Right-pads rows into a Side; with `need_prefix`, every row must hold a <s>.
  Side make_side(const std::vector<std::vector<int32_t>>& rows, bool need_prefix, const char* side) const {
    Side s;
    s.B = int64_t(rows.size());
    for (const auto& r : rows) s.T = std::max(s.T, int64_t(r.size()));
    s.ids.assign(size_t(s.B * s.T), int32_t(model_.cfg.pad_token_id));
    s.mask.assign(size_t(s.B * s.T), 0.0f);
    s.prefix.assign(size_t(s.B * s.T), 0.0f);
    for (int64_t b = 0; b < s.B; ++b) {
      const auto& r = rows[size_t(b)];
      int64_t last_bos = -1;
      for (size_t t = 0; t < r.size(); ++t) {
        s.ids[size_t(b * s.T) + t] = r[t];
        s.mask[size_t(b * s.T) + t] = 1.0f;
        if (r[t] == bos_) last_bos = int64_t(t);
      }
      XV_CHECK(!need_prefix || last_bos >= 0,
               "pair {}: the {} prompt has no <s> token, which the image-prefix loss pools up to", b + 1, side);
      for (int64_t t = 0; t <= last_bos; ++t) s.prefix[size_t(b * s.T + t)] = 1.0f;
      s.last.push_back(int64_t(r.size()) - 1);
    }
    return s;
  }

  // One pair's image (decoded and HD-preprocessed) and prompt ids; `i` numbers the pair in messages.
  std::shared_ptr<const Phi3VPrepared> prepare_one(const TrainPair& pr, size_t i, bool with_xx) const {
    auto p = std::make_shared<Phi3VPrepared>();
    if (pr.image_bytes)
      p->image = std::make_shared<Phi3VImageInputs>(phi3v_preprocess(
          decode_image_bytes(reinterpret_cast<const uint8_t*>(pr.image_bytes->data()), pr.image_bytes->size(),
                             pr.image_name),
          img_cfg_));
    else if (!pr.image.empty())
      p->image = std::make_shared<Phi3VImageInputs>(phi3v_preprocess(load_image(pr.image), img_cfg_));
    p->en = prompt(pr.text_en, p->image.get(), fmt::format("pair {}: the English text", i + 1));
    if (with_xx) p->xx = prompt(pr.text_xx, p->image.get(), fmt::format("pair {}: the other-language text", i + 1));
    return p;
  }

  Prepared prepare_batch(const std::vector<TrainPair>& batch, bool with_xx, bool prefix_loss) const {
    Prepared p;
    p.row_image.assign(batch.size(), -1);
    int64_t n_tok = 0;
    std::vector<std::vector<int32_t>> en, xx;
    for (size_t i = 0; i < batch.size(); ++i) {
      std::shared_ptr<const Phi3VPrepared> pre =
          std::dynamic_pointer_cast<const Phi3VPrepared>(batch[i].prepared);
      if (!pre || (with_xx && pre->xx.empty())) pre = prepare_one(batch[i], i, with_xx);
      if (pre->image) {
        p.row_image[i] = int(p.images.size());
        p.images.push_back(*pre->image);
        p.tok0.push_back(n_tok);
        n_tok += pre->image->num_img_tokens;
      }
      en.push_back(pre->en);
      if (with_xx) xx.push_back(pre->xx);
    }
    const bool need_prefix = prefix_loss && !p.images.empty();
    p.en = make_side(en, need_prefix, "English");
    if (with_xx) p.xx = make_side(xx, need_prefix, "other-language");
    return p;
  }

  std::string arch_ = "phi3_v";
  std::string dir_;  // the base model folder
  LoraConfig lcfg_;  // the adapters' config (as loaded by load_adapter, after one)
  uint64_t seed_ = 0;
  bool defer_ = false;  // the frozen base is shape-only until a sharding wrapper reads it (frozen_units)
  Phi3VModel model_;
  std::unique_ptr<Tokenizer> tok_;
  Phi3VImageConfig img_cfg_;
  Phi3VLora lora_;     // no adapters (empty pointer maps) with trainable 'full'
  bool full_ = false;  // trainable 'full': every weight of the embedding path trains, into grads_
  Phi3VGrads grads_;
  int32_t bos_ = 1;
  UnitAccess* units_ = nullptr;  // set by a sharding wrapper (frozen_units)
  int64_t vision_per_unit_ = UnitOptions{}.vision_layers_per_unit;

  // CLIP layer groups (units); the first also holds the tower's embeddings, so there is one even without layers.
  int64_t clip_groups() const {
    const int64_t Lv = int64_t(model_.vision.clip.layers.size());
    return std::max<int64_t>(1, (Lv + vision_per_unit_ - 1) / vision_per_unit_);
  }
  // The CLIP layers [group_begin(g), group_end(g)) of group g.
  int64_t group_begin(int64_t g) const { return g * vision_per_unit_; }
  int64_t group_end(int64_t g) const {
    return std::min((g + 1) * vision_per_unit_, int64_t(model_.vision.clip.layers.size()));
  }
};

void Phi3VKdModel::save_merged_full(const std::string& out) const {
  std::map<std::string, Tensor> cur;  // checkpoint name -> current f32 value
  for_each_weight(model_.decoder, model_.vision, [&](const std::string& name, const Tensor& w) {
    const std::vector<std::string> parts = checkpoint_names(name);
    if (parts.size() == 3) {  // CLIP's fused q/k/v back into q_proj, k_proj, v_proj
      const bool bias = name.ends_with(".bias");
      const int64_t rows = w.dim(0) / 3, cols = bias ? 1 : w.dim(1);
      for (int64_t k = 0; k < 3; ++k) {
        Tensor t = bias ? Tensor({rows}) : Tensor({rows, cols});
        std::copy(w.data.begin() + k * rows * cols, w.data.begin() + (k + 1) * rows * cols, t.data.begin());
        cur[parts[size_t(k)]] = std::move(t);
      }
      return;
    }
    Tensor t = w;
    if (name.ends_with("patch_embedding.weight")) {
      const auto& vc = model_.vision.clip.cfg;
      t.reshape({vc.hidden_size, vc.num_channels, vc.patch_size, vc.patch_size});
    }
    cur[name] = std::move(t);
  });
  save_model_with_weights(dir_, out, cur, kMergedRequired, kMergedOptional, false);
}

}  // namespace

std::unique_ptr<KdModel> make_phi3v_kd_model(const std::string& dir, const std::string& trainable,
                                             const LoraConfig& lora, uint64_t seed, bool defer_frozen) {
  return std::make_unique<Phi3VKdModel>(dir, trainable, lora, seed, defer_frozen);
}

}  // namespace xv
