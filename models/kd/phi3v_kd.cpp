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

#include "image/image.h"
#include "kernels/ops.h"
#include "models/kd/kd_shell.h"
#include "models/kd/losses.h"
#include "models/phi3v.h"
#include "models/pooling.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

// One side (English or other-language) of a batch, right-padded with the pad id.
struct Side {
  std::vector<int32_t> ids;   // (B, T), image placeholders negative
  Tensor mask;                // (B, T) F32: 1 for real tokens
  Tensor prefix;              // (B, T) F32: 1 at every position up to and including the row's last <s>
  std::vector<int64_t> last;  // (B) the last real token
  int64_t B = 0, T = 0;
};

// A micro-batch made ready: the images (one per pair that has one) and both sides' prompt ids.
struct Prepared {
  std::vector<std::shared_ptr<const Phi3VImageInputs>> images;
  std::vector<int> row_image;  // (B) index into images, -1 for a text-only pair
  std::vector<int64_t> tok0;   // per image: its first row in the stacked image tokens
  Side en, xx;

  std::vector<const Phi3VImageInputs*> image_list() const {
    std::vector<const Phi3VImageInputs*> out;
    for (const auto& im : images) out.push_back(im.get());
    return out;
  }
  // Each row's image within the stacked image tokens (none for a text-only pair).
  std::vector<std::vector<ImageTokens>> row_tokens() const {
    std::vector<std::vector<ImageTokens>> out(row_image.size());
    for (size_t b = 0; b < row_image.size(); ++b)
      if (const int i = row_image[b]; i >= 0) out[b].push_back({tok0[size_t(i)], images[size_t(i)]->num_img_tokens});
    return out;
  }
};

// One pair made ready ahead of the step by the data reader's workers: its image and prompt ids.
struct Phi3VPrepared : PreparedInputs {
  std::shared_ptr<const Phi3VImageInputs> image;  // null for a text-only pair
  std::vector<int32_t> en, xx;                    // prompt ids, image placeholders included
};

// What one micro-batch's step carries from stage to stage (Phi3VKdModel::forward_backward).
struct Phi3VStep {
  Prepared p;
  bool has_img = false, prefix = false;
  bool train_vis = false;     // the tower has adapters (or trains fully) and there are images
  bool walk_vis = false;      // the tower's units are walked in forward (images here or on another rank)
  bool walk_vis_bwd = false;  // ... and in backward
  bool need_teacher = false;  // the teacher runs (no teacher cache, or the prefix terms need it)
  LoraRun run_en, run_xx, run_vis;
  Phi3VVisionActs vacts;
  Tensor s_tok, t_tok;            // (n_tok, C) student and teacher image tokens
  Phi3Acts acts_en, acts_xx;      // the student passes
  Tensor h_en, h_xx;              // (B, T, C) their final hidden states
  Tensor t_en, t_pre;             // (B, C) teacher targets: last token, prefix mean
  Tensor dh_en, dh_xx;            // (B, T, C) the loss's gradient at the final hidden states
  Tensor dx_en, dx_xx;            // (B*T, C) the gradient at the input embeddings
  Tensor dtok;                    // (n_tok, C) both sides' gradient at the student's image tokens
};

class Phi3VKdModel : public KdShell {
 public:
  Phi3VKdModel(const std::string& dir, const std::string& trainable, const LoraConfig& lcfg, uint64_t seed,
               const LoadOptions& o)
      : KdShell("phi3_v", dir, trainable, lcfg, seed, o), model_(Phi3VModel::load(dir, load_)) {
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
  int64_t dim() const override { return model_.cfg.hidden_size; }
  Device device() const override { return model_.device; }
  bool takes_images() const override { return true; }

  void zero_grad() override {
    if (full_) grads_.zero();
    lora_.zero_grad();
  }

  std::shared_ptr<const PreparedInputs> prepare(const TrainPair& pair) const override {
    return prepare_one(pair, 0, true);
  }

  // The stages below, in order, each bracketing the units it uses (frozen_units; no-ops without a UnitAccess):
  // each unit is acquired once for the teacher pass and the student passes. Forward: the CLIP groups, the
  // projector, the embeddings, the decoder layers (the last one, holding model.norm, stays for backward).
  // Backward: the decoder layers last first, then, when the tower trains, the projector and the CLIP groups
  // last first.
  KdLossTerms forward_backward(const std::vector<TrainPair>& batch, const KdStepOptions& opt) override {
    check_step(batch, opt);
    XV_CHECK(!full_ || !opt.image_prefix_loss,
             "kd step: trainable 'full' does not support the image-prefix loss (image_prefix_loss): its teacher "
             "targets would need the original model, and the teacher cache holds none; turn it off");
    Phi3VStep s = begin_step(batch, opt);
    vision_forward(s, opt);
    decoder_forward(s, opt);
    const KdLossTerms out = loss(s, opt);
    decoder_backward(s);
    inputs_backward(s);
    vision_backward(s);
    return out;
  }

  PreparedSize prepared_size(const PreparedInputs& p) const override {
    const auto& q = dynamic_cast<const Phi3VPrepared&>(p);
    return {int64_t(std::max(q.en.size(), q.xx.size())), q.image ? q.image->pixel_values.dim(0) : 0};
  }

  // Per decoder row (N = batch x tokens, f32): a layer's Phi3LayerActs hold 4C + QKV + Hq D + 3I + (the ranks
  // of its adapters); each student pass keeps that for every layer (only the input C with checkpointing) and
  // the final norm's input. Besides: the passes' hidden states and gradients (h, dh, dx of both students, the
  // teacher's h; image tokens of the student, the teacher and their gradient, at most N rows each), one layer
  // recomputed (checkpointing) and one layer's backward temporaries. The tower, per CLIP row
  // (R = crops x (1 + patches)): its pixels, the student's and the teacher's hidden states and one layer's
  // temporaries (one layer more recomputed in its backward with checkpointing); kept through the step when it
  // trains (adapters on the tower, or 'full'): its ClipLayerActs (7C' + 2I' + ranks) per layer as the decoder's,
  // and the embeddings' inputs with 'full'. (A sum: the tower's pass and the decoder's peak do not all coexist,
  // so this is above a step's peak, by up to about 2x with images; tests/test_memory_plan.cpp.)
  uint64_t activation_bytes(const ActivationShape& s) const override {
    const Phi3VConfig& c = model_.cfg;
    const int64_t C = c.hidden_size, I = c.intermediate_size, L = decoder_layers(), D = c.head_dim();
    const int64_t QKV = (c.num_attention_heads + 2 * c.num_key_value_heads) * D;
    const auto ranks = [&](const auto& slots) {
      int64_t most = 0;
      for (const auto& layer : slots) {
        int64_t r = 0;
        for (const int i : layer)
          if (i >= 0) r += lora_.adapters[size_t(i)].r;
        most = std::max(most, r);
      }
      return most;
    };
    const bool teacher = !s.teacher_cache || (s.image_prefix_loss && s.crops > 0);
    const int64_t layer = 4 * C + QKV + c.num_attention_heads * D + 3 * I + ranks(lora_.dec);
    const int64_t kept = L * (s.checkpointing ? C : layer) + C;
    const int64_t live = (teacher ? 7 : 6) * C + (s.crops > 0 ? 3 * C : 0);
    const int64_t per_row = 2 * kept + live + (s.checkpointing ? layer : 0) + layer;
    const uint64_t decoder = uint64_t(s.batch) * uint64_t(s.tokens) * uint64_t(per_row);
    uint64_t kept_vision = 0, tower = 0;  // the tower's kept activations; its pass's own
    if (s.crops > 0) {
      const ClipVision& v = model_.vision.clip;
      const int64_t S = v.cfg.image_size, P = (S / v.cfg.patch_size) * (S / v.cfg.patch_size);
      const int64_t Cv = v.cfg.hidden_size, Iv = v.cfg.intermediate_size, Lv = int64_t(v.layers.size());
      const bool trains = full_ || lora_.vision_adapted();
      const int64_t vlayer = 7 * Cv + 2 * Iv + ranks(lora_.clip);
      const uint64_t rows = uint64_t(s.crops) * uint64_t(1 + P);
      int64_t kept_row = trains ? Lv * (s.checkpointing ? Cv : vlayer) : 0;
      if (full_) kept_row += 3 * v.cfg.patch_size * v.cfg.patch_size + Cv;
      kept_vision = rows * uint64_t(kept_row);
      tower = rows * uint64_t(2 * Cv + vlayer + (trains && s.checkpointing ? vlayer : 0)) +
              uint64_t(s.crops) * 3 * uint64_t(S * S);
    }
    return (kept_vision + tower + decoder) * sizeof(float);
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
    attach_unit_loaders(u);  // each unit read from the checkpoint when the wrapper asks (a deferred base)
    return u;
  }

  Tensor teacher_embed(const std::vector<TrainPair>& batch) override {
    XV_CHECK(!batch.empty(), "teacher embed: empty batch");
    const Prepared p = prepare_batch(batch, false, false);
    Tensor tok;
    if (!p.images.empty()) tok = model_.vision.forward_images(p.image_list(), nullptr, nullptr, {});
    Tensor h = model_.embed_inputs(p.en.ids, p.en.B, p.en.T, tok, p.row_tokens());
    model_.decoder.forward(h, p.en.mask, p.en.B, p.en.T);
    return pool_at(h, p.en.last, p.en.T).to(Device::cpu());
  }

  Tensor student_embed(const std::vector<std::string>& texts, bool normalize) override {
    XV_CHECK(!texts.empty(), "student embed: no input");
    std::vector<std::vector<int32_t>> rows;
    for (size_t i = 0; i < texts.size(); ++i) rows.push_back(prompt(texts[i], nullptr, fmt::format("input {}", i + 1)));
    const Side s = make_side(rows, false, "input");
    Phi3DecoderLora dl = lora_.decoder();
    Tensor h = model_.embed_inputs(s.ids, s.B, s.T, Tensor(), {});
    model_.decoder.forward(h, s.mask, s.B, s.T, &dl, nullptr, LoraRun{});
    Tensor e = pool_at(h, s.last, s.T);
    if (normalize) ops::l2_normalize(e);
    return std::move(e).to(Device::cpu());
  }

 protected:
  std::vector<LoraAdapter>& adapters() override { return lora_.adapters; }
  const std::vector<LoraAdapter>& adapters() const override { return lora_.adapters; }
  void install_adapters(const LoraConfig& c, const std::function<void(std::vector<LoraAdapter>&)>& fill) override {
    Phi3VLora lora = Phi3VLora::create(model_, c, seed_);
    fill(lora.adapters);
    lora_ = std::move(lora);
  }
  // Every weight the embedding path uses, under the checkpoint's names (CLIP's q/k/v fused:
  // "<layer>.self_attn.qkv_proj.*", see the top), in the order full fine-tuning lists them.
  void for_each_weight(const std::function<void(const std::string&, Tensor&, Tensor*)>& fn) override {
    Phi3Decoder& d = model_.decoder;
    Phi3VImageEmbedding& v = model_.vision;
    Phi3Grads* dg = full_ ? &grads_.decoder : nullptr;
    Phi3VVisionGrads* vg = full_ ? &grads_.vision : nullptr;
    auto g = [](auto* owner, auto field) -> Tensor* { return owner ? &(owner->*field) : nullptr; };
    fn("model.embed_tokens.weight", d.embed, g(dg, &Phi3Grads::embed));
    for (size_t l = 0; l < d.layers.size(); ++l) {
      Phi3Layer& L = d.layers[l];
      Phi3LayerGrads* lg = dg ? &dg->layers[l] : nullptr;
      const std::string p = "model.layers." + std::to_string(l) + ".";
      fn(p + "input_layernorm.weight", L.in_ln, g(lg, &Phi3LayerGrads::in_ln));
      fn(p + "self_attn.qkv_proj.weight", L.qkv_w, g(lg, &Phi3LayerGrads::qkv_w));
      fn(p + "self_attn.o_proj.weight", L.o_w, g(lg, &Phi3LayerGrads::o_w));
      fn(p + "post_attention_layernorm.weight", L.post_ln, g(lg, &Phi3LayerGrads::post_ln));
      fn(p + "mlp.gate_up_proj.weight", L.gate_up_w, g(lg, &Phi3LayerGrads::gate_up_w));
      fn(p + "mlp.down_proj.weight", L.down_w, g(lg, &Phi3LayerGrads::down_w));
    }
    fn("model.norm.weight", d.norm, g(dg, &Phi3Grads::norm));
    const std::string vp = "model.vision_embed_tokens.";
    fn(vp + "glb_GN", v.glb_GN, g(vg, &Phi3VVisionGrads::glb_GN));
    fn(vp + "sub_GN", v.sub_GN, g(vg, &Phi3VVisionGrads::sub_GN));
    fn(vp + "img_projection.0.weight", v.p0_w, g(vg, &Phi3VVisionGrads::p0_w));
    fn(vp + "img_projection.0.bias", v.p0_b, g(vg, &Phi3VVisionGrads::p0_b));
    fn(vp + "img_projection.2.weight", v.p2_w, g(vg, &Phi3VVisionGrads::p2_w));
    fn(vp + "img_projection.2.bias", v.p2_b, g(vg, &Phi3VVisionGrads::p2_b));
    ClipVision& c = v.clip;
    ClipGrads* cg = vg ? &vg->clip : nullptr;
    const std::string cp = vp + "img_processor.vision_model.";
    fn(cp + "embeddings.patch_embedding.weight", c.patch_w, g(cg, &ClipGrads::patch_w));
    fn(cp + "embeddings.class_embedding", c.class_emb, g(cg, &ClipGrads::class_emb));
    fn(cp + "embeddings.position_embedding.weight", c.pos_emb, g(cg, &ClipGrads::pos_emb));
    fn(cp + "pre_layrnorm.weight", c.pre_ln_g, g(cg, &ClipGrads::pre_ln_g));
    fn(cp + "pre_layrnorm.bias", c.pre_ln_b, g(cg, &ClipGrads::pre_ln_b));
    for (size_t l = 0; l < c.layers.size(); ++l) {
      ClipLayer& L = c.layers[l];
      ClipLayerGrads* lg = cg ? &cg->layers[l] : nullptr;
      const std::string p = cp + "encoder.layers." + std::to_string(l) + ".";
      fn(p + "layer_norm1.weight", L.ln1_g, g(lg, &ClipLayerGrads::ln1_g));
      fn(p + "layer_norm1.bias", L.ln1_b, g(lg, &ClipLayerGrads::ln1_b));
      fn(p + "self_attn.qkv_proj.weight", L.qkv_w, g(lg, &ClipLayerGrads::qkv_w));  // fused q_proj, k_proj, v_proj
      fn(p + "self_attn.qkv_proj.bias", L.qkv_b, g(lg, &ClipLayerGrads::qkv_b));
      fn(p + "self_attn.out_proj.weight", L.out_w, g(lg, &ClipLayerGrads::out_w));
      fn(p + "self_attn.out_proj.bias", L.out_b, g(lg, &ClipLayerGrads::out_b));
      fn(p + "layer_norm2.weight", L.ln2_g, g(lg, &ClipLayerGrads::ln2_g));
      fn(p + "layer_norm2.bias", L.ln2_b, g(lg, &ClipLayerGrads::ln2_b));
      fn(p + "mlp.fc1.weight", L.fc1_w, g(lg, &ClipLayerGrads::fc1_w));
      fn(p + "mlp.fc1.bias", L.fc1_b, g(lg, &ClipLayerGrads::fc1_b));
      fn(p + "mlp.fc2.weight", L.fc2_w, g(lg, &ClipLayerGrads::fc2_w));
      fn(p + "mlp.fc2.bias", L.fc2_b, g(lg, &ClipLayerGrads::fc2_b));
    }
  }
  // The checkpoint tensors a weight of for_each_weight is made of: itself, or CLIP's q/k/v for a fused one
  // (the decoder's qkv_proj is fused in the checkpoint too).
  std::vector<std::string> checkpoint_names(const std::string& name) const override {
    if (name.starts_with("model.layers.") ||
        !(name.ends_with("self_attn.qkv_proj.weight") || name.ends_with("self_attn.qkv_proj.bias")))
      return {name};
    const std::string stem = name.substr(0, name.rfind("qkv_proj.")), kind = name.ends_with(".bias") ? ".bias" : ".weight";
    return {stem + "q_proj" + kind, stem + "k_proj" + kind, stem + "v_proj" + kind};
  }
  MergedFiles merged_files() const override {
    return {{"config.json", "tokenizer.json"},
            {"preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"},
            false};
  }

 private:
  // ---- The stages of forward_backward ----

  // The batch made ready, and what this step will run: the teacher, the tower, the prefix terms.
  Phi3VStep begin_step(const std::vector<TrainPair>& batch, const KdStepOptions& opt) const {
    Phi3VStep s;
    s.p = prepare_batch(batch, true, opt.image_prefix_loss);
    s.has_img = !s.p.images.empty();
    s.prefix = opt.image_prefix_loss && s.has_img;
    s.train_vis = s.has_img && (full_ || lora_.vision_adapted());
    // The tower's units are walked (forward, and backward when it has adapters) when this micro-batch has
    // images, or when another rank's may (opt.vision_units): the ranks must gather the same units.
    s.walk_vis = s.has_img || (units_ && opt.vision_units);
    s.walk_vis_bwd = s.walk_vis && (full_ || lora_.vision_adapted());
    s.need_teacher = !opt.teacher_en || s.prefix;
    // Independent dropout streams for the vision pass and the two decoder passes of this micro-batch.
    const uint64_t d = opt.dropout_seed;
    s.run_en = LoraRun{d ? d * 4 + 1 : 0}, s.run_xx = LoraRun{d ? d * 4 + 2 : 0}, s.run_vis = LoraRun{d ? d * 4 + 3 : 0};
    return s;
  }

  // The units in the order of a step (frozen_units): CLIP groups, projector, embeddings, decoder layers.
  int64_t decoder_layers() const { return int64_t(model_.decoder.layers.size()); }
  int u_proj() const { return int(clip_groups()); }
  int u_emb() const { return int(clip_groups() + 1); }
  int u_layer(int64_t l) const { return int(clip_groups() + 2 + l); }
  int after_decoder(const Phi3VStep& s) const { return s.walk_vis_bwd ? u_proj() : -1; }  // backward's next unit

  // The image tokens: the student's (activations kept for backward when the tower trains) and, when the tower
  // has adapters, the teacher's (adapters off); otherwise one pass serves both. Without images of its own, a
  // rank still gathers these units with the others.
  void vision_forward(Phi3VStep& s, const KdStepOptions& opt) {
    if (!s.walk_vis) return;
    const ClipVision& cv = model_.vision.clip;
    ClipLora cl = lora_.vision();
    const int64_t G = clip_groups();
    Phi3VCropBatch cb;
    if (s.has_img) cb = model_.vision.stack_crops(s.p.image_list());
    s.vacts.clip.checkpointing = opt.checkpointing;
    s.vacts.clip.full = full_;
    const bool teacher_vis = s.need_teacher && s.train_vis;
    const bool keep_emb = s.train_vis && full_;  // the embeddings' inputs, for their backward
    Tensor xs, xt;  // (n_crops * (1 + num_patches), C')
    for (int64_t g = 0; g < G; ++g) {
      unit_acquire(units_, int(g), g + 1 < G ? int(g + 1) : u_proj());
      if (s.has_img && g == 0) {
        xs = cv.embed(cb.pixels, keep_emb ? &s.vacts.clip.cols : nullptr, keep_emb ? &s.vacts.clip.x_emb : nullptr);
        if (teacher_vis) xt = xs;
        if (s.train_vis) cv.begin_acts(s.vacts.clip, cb.n_crops);
      }
      for (int64_t l = group_begin(g); s.has_img && l < group_end(g); ++l) {
        if (s.train_vis) cv.layer_forward_kept(l, xs, s.vacts.clip, &cl, s.run_vis);
        else cv.layer_forward(l, xs, cb.n_crops, nullptr, s.run_vis, nullptr);
        if (teacher_vis) cv.layer_forward(l, xt, cb.n_crops, nullptr, {}, nullptr);
      }
      unit_release(units_, int(g));
    }
    unit_acquire(units_, u_proj(), u_emb());
    if (s.has_img) {
      s.s_tok = model_.vision.project(cv.drop_cls(xs, cb.n_crops), cb, s.train_vis ? &s.vacts : nullptr);
      if (teacher_vis) s.t_tok = model_.vision.project(cv.drop_cls(xt, cb.n_crops), cb, nullptr);
      else if (s.need_teacher) s.t_tok = s.s_tok;
    }
    unit_release(units_, u_proj());
  }

  // The decoder, layer by layer: the teacher (adapters off; its targets, unless the cache gives them) and the
  // two student passes.
  void decoder_forward(Phi3VStep& s, const KdStepOptions& opt) {
    const Phi3Decoder& dec = model_.decoder;
    Phi3DecoderLora dl = lora_.decoder();
    const Prepared& p = s.p;
    const int64_t L = decoder_layers(), B = p.en.B, C = dim();
    const auto rows = p.row_tokens();
    Phi3Acts t_acts;
    s.acts_en.checkpointing = s.acts_xx.checkpointing = opt.checkpointing;
    unit_acquire(units_, u_emb(), u_layer(0));
    Tensor h_t;
    if (s.need_teacher) h_t = model_.embed_inputs(p.en.ids, B, p.en.T, s.t_tok, rows);
    s.h_en = model_.embed_inputs(p.en.ids, B, p.en.T, s.s_tok, rows);
    s.h_xx = model_.embed_inputs(p.xx.ids, B, p.xx.T, s.s_tok, rows);
    unit_release(units_, u_emb());
    if (s.need_teacher) dec.begin_acts(t_acts, p.en.mask, B, p.en.T, false);
    dec.begin_acts(s.acts_en, p.en.mask, B, p.en.T, true);
    dec.begin_acts(s.acts_xx, p.xx.mask, B, p.xx.T, true);
    for (int64_t l = 0; l < L; ++l) {
      unit_acquire(units_, u_layer(l), l + 1 < L ? u_layer(l + 1) : L > 1 ? u_layer(L - 2) : after_decoder(s));
      if (s.need_teacher) dec.layer_forward(l, h_t, p.en.mask, B, p.en.T, t_acts.cos, t_acts.sin, nullptr, {}, nullptr);
      dec.layer_forward_kept(l, s.h_en, s.acts_en, &dl, s.run_en);
      dec.layer_forward_kept(l, s.h_xx, s.acts_xx, &dl, s.run_xx);
      if (l + 1 < L) unit_release(units_, u_layer(l));
    }
    if (s.need_teacher) {
      dec.final_norm(h_t, nullptr);
      s.t_en = pool_at(h_t, p.en.last, p.en.T);
      if (s.prefix) s.t_pre = mean_pool(h_t, p.en.prefix, B, p.en.T);
    }
    dec.final_norm(s.h_en, &s.acts_en);
    dec.final_norm(s.h_xx, &s.acts_xx);
    if (opt.teacher_en) {
      XV_CHECK(opt.teacher_en->numel() == B * C, "kd step: teacher cache rows do not match the batch ({} x {})", B, C);
      s.t_en = opt.teacher_en->to(device());
      s.t_en.reshape({B, C});
    }
  }

  // L = 1/2 [MSE(S(en), T(en)) + MSE(S(xx), T(en))], or the mean of those and the two prefix terms; its
  // gradient at the students' final hidden states.
  KdLossTerms loss(Phi3VStep& s, const KdStepOptions& opt) {
    const Side &en = s.p.en, &xx = s.p.xx;
    const int64_t B = en.B, C = dim();
    KdGrads g;
    KdLossTerms out;
    if (s.prefix) {
      const Tensor p_en = mean_pool(s.h_en, en.prefix, B, en.T), p_xx = mean_pool(s.h_xx, xx.prefix, B, xx.T);
      out = kd_loss(pool_at(s.h_en, en.last, en.T), pool_at(s.h_xx, xx.last, xx.T), s.t_en, opt.loss_scale, &g, &p_en,
                    &p_xx, &s.t_pre);
      s.dh_en = mean_pool_backward(g.dp_en, en.prefix, B, en.T);
      s.dh_xx = mean_pool_backward(g.dp_xx, xx.prefix, B, xx.T);
    } else {
      out = kd_loss(pool_at(s.h_en, en.last, en.T), pool_at(s.h_xx, xx.last, xx.T), s.t_en, opt.loss_scale, &g);
      s.dh_en = Tensor({B, en.T, C}, DType::F32, device());
      s.dh_xx = Tensor({B, xx.T, C}, DType::F32, device());
    }
    pool_at_backward(g.d_en, en.last, en.T, s.dh_en);
    pool_at_backward(g.d_xx, xx.last, xx.T, s.dh_xx);
    s.h_en = Tensor(), s.h_xx = Tensor();
    return out;
  }

  // Both sides through the decoder, layer by layer, down to the input embeddings when something below trains.
  void decoder_backward(Phi3VStep& s) {
    const Phi3Decoder& dec = model_.decoder;
    Phi3DecoderLora dl = lora_.decoder();
    const int64_t L = decoder_layers();
    Phi3Grads* dg = full_ ? &grads_.decoder : nullptr;
    const bool need_dx = s.train_vis || full_;
    s.dx_en = dec.backward_begin(s.acts_en, s.dh_en, dl, dg);  // (B*T, C)
    s.dx_xx = dec.backward_begin(s.acts_xx, s.dh_xx, dl, dg);
    for (int64_t l = L - 1; l >= 0; --l) {
      if (l + 1 < L) unit_acquire(units_, u_layer(l), l > 0 ? u_layer(l - 1) : after_decoder(s));
      dec.layer_backward(l, s.acts_en, s.dx_en, dl, s.run_en, need_dx, dg);
      dec.layer_backward(l, s.acts_xx, s.dx_xx, dl, s.run_xx, need_dx, dg);
      unit_release(units_, u_layer(l));
    }
    s.acts_en = Phi3Acts{}, s.acts_xx = Phi3Acts{};
  }

  // The input embeddings' gradient: image rows to both sides' image tokens (one tower backward takes their
  // sum), token rows to embed_tokens (full fine-tuning).
  void inputs_backward(Phi3VStep& s) {
    if (!s.train_vis && !full_) return;
    const Prepared& p = s.p;
    const auto rows = p.row_tokens();
    if (s.train_vis) s.dtok = Tensor(s.s_tok.shape(), DType::F32, device());
    Tensor* dtok = s.train_vis ? &s.dtok : nullptr;
    Tensor* dembed = full_ ? &grads_.decoder.embed : nullptr;
    model_.embed_inputs_backward(p.en.ids, p.en.B, p.en.T, s.dx_en, rows, dtok, dembed);
    model_.embed_inputs_backward(p.xx.ids, p.xx.B, p.xx.T, s.dx_xx, rows, dtok, dembed);
  }

  // The projector and the CLIP groups, last first, when the tower trains; as in forward, gathered with the
  // others even without images of its own.
  void vision_backward(Phi3VStep& s) {
    if (!s.walk_vis_bwd) return;
    const ClipVision& cv = model_.vision.clip;
    ClipLora cl = lora_.vision();
    const int64_t G = clip_groups();
    Phi3VVisionGrads* vg = full_ ? &grads_.vision : nullptr;
    ClipGrads* cg = full_ ? &grads_.vision.clip : nullptr;
    Tensor dxv;  // (n_crops * (1 + num_patches), C')
    unit_acquire(units_, u_proj(), int(G - 1));
    if (s.train_vis) dxv = cv.backward_begin(s.vacts.clip, model_.vision.project_backward(s.vacts, s.dtok, vg), cl, cg);
    unit_release(units_, u_proj());
    for (int64_t g = G - 1; g >= 0; --g) {
      unit_acquire(units_, int(g), g > 0 ? int(g - 1) : -1);
      for (int64_t l = group_end(g) - 1; s.train_vis && l >= group_begin(g); --l)
        cv.layer_backward(l, s.vacts.clip, dxv, cl, s.run_vis, cg);
      unit_release(units_, int(g));
    }
    if (s.train_vis && cg) cv.embeddings_backward(s.vacts.clip, dxv, *cg);
  }

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
    std::vector<float> mask(size_t(s.B * s.T), 0.0f), prefix(size_t(s.B * s.T), 0.0f);
    for (int64_t b = 0; b < s.B; ++b) {
      const auto& r = rows[size_t(b)];
      int64_t last_bos = -1;
      for (size_t t = 0; t < r.size(); ++t) {
        s.ids[size_t(b * s.T) + t] = r[t];
        mask[size_t(b * s.T) + t] = 1.0f;
        if (r[t] == bos_) last_bos = int64_t(t);
      }
      XV_CHECK(!need_prefix || last_bos >= 0,
               "pair {}: the {} prompt has no <s> token, which the image-prefix loss pools up to", b + 1, side);
      for (int64_t t = 0; t <= last_bos; ++t) prefix[size_t(b * s.T + t)] = 1.0f;
      s.last.push_back(int64_t(r.size()) - 1);
    }
    s.mask = Tensor::from_vector({s.B, s.T}, mask, DType::F32, model_.device);
    s.prefix = Tensor::from_vector({s.B, s.T}, prefix, DType::F32, model_.device);
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
        p.images.push_back(pre->image);
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

  Phi3VModel model_;
  Phi3VImageConfig img_cfg_;
  Phi3VLora lora_;  // no adapters (empty pointer maps) with trainable 'full'
  Phi3VGrads grads_;  // trainable 'full'
  int32_t bos_ = 1;
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

}  // namespace

std::unique_ptr<KdModel> make_phi3v_kd_model(const std::string& dir, const std::string& trainable,
                                             const LoraConfig& lora, uint64_t seed, const LoadOptions& o) {
  return std::make_unique<Phi3VKdModel>(dir, trainable, lora, seed, o);
}

}  // namespace xv
