#include "models/phi3v.h"

#include <algorithm>

#include <fmt/ranges.h>

#include "core/safetensors.h"
#include "tokenizer/tokenizer.h"
#include "kernels/ops.h"

namespace xv {

std::vector<int64_t> Phi3VImageEmbedding::hd_layout(int64_t h, int64_t w) const {
  const int64_t G = clip.cfg.image_size / clip.cfg.patch_size, M = G / 2;  // 24 patches, 12 merged
  const int64_t n_sub = h * M * (w * M + 1), n_glb = M * (M + 1);
  std::vector<int64_t> layout(size_t((n_sub + 1 + n_glb) * 4));
  const int64_t sub_at = order == "sub_glb" ? 0 : n_glb + 1;
  const int64_t glb_at = order == "sub_glb" ? n_sub + 1 : 0;
  const int64_t sep_at = order == "sub_glb" ? n_sub : n_glb;
  // Token `tok` is the 2x2 block (2i+dy, 2j+dx) of crop `crop`, or a separator (-1 sub_GN, -2 glb_GN).
  auto merged = [&](int64_t tok, int64_t crop, int64_t i, int64_t j) {
    for (int64_t dy = 0; dy < 2; ++dy)
      for (int64_t dx = 0; dx < 2; ++dx)
        layout[size_t(tok * 4 + dy * 2 + dx)] = crop * G * G + (2 * i + dy) * G + (2 * j + dx);
  };
  auto separator = [&](int64_t tok, int64_t code) { std::fill_n(layout.begin() + tok * 4, 4, code); };
  // Sub-image grid: rows of w*M merged tokens followed by sub_GN, h*M rows.
  for (int64_t r = 0; r < h * M; ++r) {
    const int64_t row = sub_at + r * (w * M + 1);
    for (int64_t col = 0; col < w * M; ++col) merged(row + col, 1 + (r / M) * w + col / M, r % M, col % M);
    separator(row + w * M, -1);
  }
  separator(sep_at, -2);
  // Global view: M rows of M tokens, each row closed by sub_GN (the reference uses sub_GN here too).
  for (int64_t r = 0; r < M; ++r) {
    const int64_t row = glb_at + r * (M + 1);
    for (int64_t col = 0; col < M; ++col) merged(row + col, 0, r, col);
    separator(row + M, -1);
  }
  return layout;
}

std::vector<int32_t> Phi3VImageEmbedding::hd_index(const Phi3VCropBatch& cb) const {
  const int64_t NPATCH = clip.cfg.num_patches();
  std::vector<int32_t> idx(static_cast<size_t>(cb.n_tok * 4));
  for (size_t i = 0; i < cb.crop0.size(); ++i) {
    const std::vector<int64_t> layout = hd_layout(cb.h[i], cb.w[i]);
    XV_CHECK(int64_t(layout.size()) / 4 == cb.ntok[i], "phi3_v: HD features give {} tokens, the processor counted {}",
             layout.size() / 4, cb.ntok[i]);
    int32_t* out = idx.data() + cb.tok0[i] * 4;
    for (size_t q = 0; q < layout.size(); ++q) {
      const int64_t src = layout[q];
      out[q] = src >= 0 ? int32_t(cb.crop0[i] * NPATCH + src) : int32_t((src == -1 ? -1 : -5) - int64_t(q % 4));
    }
  }
  return idx;
}

Tensor Phi3VImageEmbedding::forward(const Phi3VImageInputs& img) const { return forward_images({&img}, nullptr, nullptr, {}); }

Phi3VCropBatch Phi3VImageEmbedding::stack_crops(const std::vector<const Phi3VImageInputs*>& imgs) const {
  const int64_t S = clip.cfg.image_size, CH = clip.cfg.num_channels;
  const int64_t crop_px = CH * S * S;
  Phi3VCropBatch cb;
  for (const Phi3VImageInputs* img : imgs) {
    const int64_t h = img->height / kPhi3VCropSize, w = img->width / kPhi3VCropSize;
    XV_CHECK(img->pixel_values.ndim() == 4 && img->pixel_values.dim(0) >= 1 + h * w &&
                 img->pixel_values.numel() / img->pixel_values.dim(0) == crop_px,
             "phi3_v: image of {}x{} needs {} crops of {}x{}, pixel_values has shape {}", img->height, img->width,
             1 + h * w, S, S, shape_str(img->pixel_values.shape()));
    cb.crop0.push_back(cb.n_crops), cb.tok0.push_back(cb.n_tok), cb.h.push_back(h), cb.w.push_back(w);
    cb.ntok.push_back(img->num_img_tokens);
    cb.n_crops += 1 + h * w;
    cb.n_tok += img->num_img_tokens;
  }
  // The crops that run, of every image, in one stack (n_crops, 3, S, S), made on the host (where the processor
  // left them) and moved to the model's device once.
  Tensor stack({cb.n_crops, CH, S, S});
  const int64_t rows_per_crop = CH * S;  // the stack's 2-D view: rows of S pixels
  for (size_t i = 0; i < imgs.size(); ++i) {
    const int64_t n = (1 + cb.h[i] * cb.w[i]) * rows_per_crop;
    ops::copy(imgs[i]->pixel_values.rows(0, n), stack.rows(cb.crop0[i] * rows_per_crop, n));
  }
  cb.pixels = std::move(stack).to(clip.device);
  return cb;
}

Tensor Phi3VImageEmbedding::forward_images(const std::vector<const Phi3VImageInputs*>& imgs, const ClipLora* lora,
                                           Phi3VVisionActs* acts, const LoraRun& run) const {
  const Phi3VCropBatch cb = stack_crops(imgs);
  const Tensor feats = clip.forward_patches(cb.pixels, lora, acts ? &acts->clip : nullptr, run);
  return project(feats, cb, acts);
}

Tensor Phi3VImageEmbedding::project(const Tensor& feats, const Phi3VCropBatch& cb, Phi3VVisionActs* acts) const {
  const int64_t C = clip.cfg.hidden_size, C4 = 4 * C, Hd = p0_w.dim(0), NPATCH = clip.cfg.num_patches();
  const Device dev = clip.device;
  XV_CHECK(feats.numel() == cb.n_crops * NPATCH * C, "phi3_v: CLIP features must be ({}, {}, {})", cb.n_crops, NPATCH,
           C);
  // The HD sequence f (n_tok, 4C'), as n_tok * 4 rows of C': CLIP rows, or separator blocks from a table of
  // sub_GN's four blocks then glb_GN's.
  const std::vector<int32_t> layout = hd_index(cb);
  Tensor sep({8, C}, DType::F32, dev);
  ops::copy(sub_GN.alias(0, {4, C}), sep.rows(0, 4));
  ops::copy(glb_GN.alias(0, {4, C}), sep.rows(4, 4));
  Tensor f({cb.n_tok, C4}, DType::F32, dev);
  if (cb.n_tok) ops::gather_rows(feats, sep, Tensor::indices(layout, dev), f.alias(0, {cb.n_tok * 4, C}));
  // Projector: Linear(4C' -> Hd) - GELU - Linear(Hd -> Hd).
  const int64_t n_tok = cb.n_tok;
  Tensor y_pre({n_tok, Hd}, DType::F32, dev), z({n_tok, Hd}, DType::F32, dev);
  ops::linear(f, p0_w, p0_b, y_pre);
  Tensor y = y_pre;
  ops::activation(ops::Act::gelu_erf, y);
  ops::linear(y, p2_w, p2_b, z);
  if (acts && acts->clip.full) acts->f = std::move(f);
  if (acts) {
    acts->layout = layout;
    acts->y_pre = std::move(y_pre);
  }
  return z;
}

void Phi3VImageEmbedding::backward(Phi3VVisionActs& acts, const Tensor& dtokens, const ClipLora& lora,
                                   const LoraRun& run, Phi3VVisionGrads* grads) const {
  const Tensor dfeats = project_backward(acts, dtokens, grads);
  clip.backward(acts.clip, dfeats, lora, run, grads ? &grads->clip : nullptr);
}

Tensor Phi3VImageEmbedding::project_backward(const Phi3VVisionActs& acts, const Tensor& dtokens,
                                             Phi3VVisionGrads* grads) const {
  const int64_t C = clip.cfg.hidden_size, C4 = 4 * C, Hd = p0_w.dim(0), NPATCH = clip.cfg.num_patches();
  const Device dev = clip.device;
  const int64_t n_tok = acts.y_pre.dim(0);
  XV_CHECK(dtokens.numel() == n_tok * Hd, "phi3_v vision backward: dtokens must be ({}, {})", n_tok, Hd);
  Tensor dy({n_tok, Hd}, DType::F32, dev), df({n_tok, C4}, DType::F32, dev);
  if (!grads) {  // through the frozen projector: dy = dz W2, GELU, df = dy W0
    ops::linear_backward(View{}, p2_w, dtokens, dy, View{}, View{});
    ops::activation_backward(ops::Act::gelu_erf, acts.y_pre, dy, dy);
    ops::linear_backward(View{}, p0_w, dy, df, View{}, View{});
  } else {  // the same, with the projector's gradients (the GELU output recomputed from its input)
    XV_CHECK(!acts.f.empty() && acts.f.numel() == n_tok * C4,
             "phi3_v vision backward: full gradients need a forward with clip.full");
    Tensor y = acts.y_pre;
    ops::activation(ops::Act::gelu_erf, y);
    ops::linear_backward(y, p2_w, dtokens, dy, grads->p2_w, grads->p2_b);
    ops::activation_backward(ops::Act::gelu_erf, acts.y_pre, dy, dy);
    ops::linear_backward(acts.f, p0_w, dy, df, grads->p0_w, grads->p0_b);
  }
  // Through the HD glue to the CLIP outputs and, when they train, the separators: each destination gets its
  // rows in token order (three passes, one per destination table).
  Tensor dfeats({acts.clip.N, NPATCH, C}, DType::F32, dev);
  if (n_tok == 0) return dfeats;
  const Tensor df4 = df.alias(0, {n_tok * 4, C});  // the same elements, as rows of C'
  ops::scatter_add_rows(df4, Tensor::indices(acts.layout, dev), dfeats, View{});
  if (grads) {
    std::vector<int32_t> sub(acts.layout.size()), glb(acts.layout.size());
    for (size_t q = 0; q < acts.layout.size(); ++q) {
      const int32_t k = acts.layout[q];
      sub[q] = k < 0 && k >= -4 ? k : 0;      // 0: not a sub_GN block (there is no first table: skipped)
      glb[q] = k <= -5 ? k + 4 : 0;           // glb_GN block -5 - j -> row j of its table
    }
    ops::scatter_add_rows(df4, Tensor::indices(sub, dev), View{}, grads->sub_GN.alias(0, {4, C}));
    ops::scatter_add_rows(df4, Tensor::indices(glb, dev), View{}, grads->glb_GN.alias(0, {4, C}));
  }
  return dfeats;
}

Phi3VModel Phi3VModel::load(const std::string& model_dir, const LoadOptions& o) {
  Phi3VModel m;
  m.cfg = load_phi3v_config(model_dir);
  m.device = o.device;
  WeightStore ws = WeightStore::open_dir(model_dir);
  ws.set_shapes_only(o.shapes_only);
  m.decoder = Phi3Decoder::from_weights(m.cfg, ws, o);
  const std::string p = "model.vision_embed_tokens.";
  const int64_t C4 = 4 * m.cfg.image_dim_out, Hd = m.cfg.hidden_size;
  auto get = [&](const std::string& n, const Shape& s) { return ws.get(n, s, o.weight_dtype).to(o.device); };
  Phi3VImageEmbedding& v = m.vision;
  v.clip = ClipVision::from_weights(m.cfg.vision, m.cfg.layer_idx, ws, p + "img_processor.", o);
  v.order = m.cfg.hd_transform_order;
  v.glb_GN = get(p + "glb_GN", {1, 1, C4});
  v.sub_GN = get(p + "sub_GN", {1, 1, 1, C4});
  v.p0_w = get(p + "img_projection.0.weight", {Hd, C4});
  v.p0_b = get(p + "img_projection.0.bias", {Hd});
  v.p2_w = get(p + "img_projection.2.weight", {Hd, Hd});
  v.p2_b = get(p + "img_projection.2.bias", {Hd});
  return m;
}

Tensor Phi3VModel::forward(const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B, int64_t T,
                           const std::vector<std::vector<const Phi3VImageInputs*>>& images) const {
  const int64_t N = B * T, C = cfg.hidden_size;
  XV_CHECK(int64_t(ids.size()) == N && int64_t(mask.size()) == N, "phi3_v forward: ids/mask must hold B*T = {}", N);
  XV_CHECK(T <= cfg.max_position_embeddings, "phi3_v: sequence length {} exceeds max_position_embeddings {}", T,
           cfg.max_position_embeddings);
  // Each image's projected tokens (one CLIP pass per image), stacked in order; then the scatter into the
  // embeddings.
  std::vector<Tensor> feats;
  std::vector<std::vector<ImageTokens>> toks(static_cast<size_t>(B));
  int64_t n_tok = 0;
  for (int64_t b = 0; b < B && b < int64_t(images.size()); ++b)
    for (const Phi3VImageInputs* img : images[size_t(b)]) {
      feats.push_back(vision.forward(*img));
      toks[size_t(b)].push_back({n_tok, feats.back().dim(0)});
      n_tok += feats.back().dim(0);
    }
  Tensor tokens;
  if (n_tok) {
    tokens = Tensor({n_tok, C}, DType::F32, device);
    int64_t r = 0;
    for (const Tensor& f : feats) {
      ops::copy(f, tokens.rows(r, f.dim(0)));
      r += f.dim(0);
    }
  }
  Tensor x = embed_inputs(ids, B, T, tokens, toks);
  decoder.forward(x, Tensor::from_vector({B, T}, mask, DType::F32, device), B, T);
  return x;
}

std::vector<int32_t> Phi3VModel::input_rows(const std::vector<int32_t>& ids, int64_t B, int64_t T,
                                            const std::vector<std::vector<ImageTokens>>& images) const {
  XV_CHECK(int64_t(ids.size()) == B * T, "phi3_v forward: ids must hold B*T = {}", B * T);
  std::vector<int32_t> rows(ids.size());
  const std::vector<ImageTokens> none;
  for (int64_t b = 0; b < B; ++b) {
    const auto& imgs = b < int64_t(images.size()) ? images[size_t(b)] : none;
    std::vector<int64_t> used(imgs.size(), 0);
    for (int64_t t = 0; t < T; ++t) {
      const int32_t id = ids[size_t(b * T + t)];
      int32_t& out = rows[size_t(b * T + t)];
      if (id >= 0) {
        XV_CHECK(id < cfg.vocab_size, "phi3_v: token id {} outside the vocabulary [0, {})", id, cfg.vocab_size);
        out = id;
        continue;
      }
      const size_t k = size_t(-int64_t(id) - 1);
      XV_CHECK(k < imgs.size(), "phi3_v: row {} has a placeholder for image {} but only {} image(s)", b, k + 1,
               imgs.size());
      XV_CHECK(used[k] < imgs[k].n, "phi3_v: row {} has more placeholders for image {} than its {} tokens", b, k + 1,
               imgs[k].n);
      out = int32_t(-1 - (imgs[k].row0 + used[k]++));
    }
    for (size_t k = 0; k < imgs.size(); ++k)
      XV_CHECK(used[k] == imgs[k].n, "phi3_v: row {} has {} placeholders for image {}, expected {}", b, used[k], k + 1,
               imgs[k].n);
  }
  return rows;
}

Tensor Phi3VModel::embed_inputs(const std::vector<int32_t>& ids, int64_t B, int64_t T, const Tensor& tokens,
                                const std::vector<std::vector<ImageTokens>>& images) const {
  const int64_t C = cfg.hidden_size;
  const std::vector<int32_t> rows = input_rows(ids, B, T, images);
  Tensor x({B, T, C}, DType::F32, device);
  ops::gather_rows(decoder.embed, tokens.empty() ? View{} : tokens.view(), Tensor::indices(rows, device), x);
  return x;
}

void Phi3VModel::embed_inputs_backward(const std::vector<int32_t>& ids, int64_t B, int64_t T, const Tensor& dx,
                                       const std::vector<std::vector<ImageTokens>>& images, Tensor* dtokens,
                                       Tensor* dembed) const {
  const int64_t C = cfg.hidden_size;
  XV_CHECK(dx.numel() == B * T * C, "phi3_v backward: dx must hold B*T = {} rows", B * T);
  const bool to_images = dtokens && !dtokens->empty();
  if (!to_images && !dembed) return;
  std::vector<int32_t> rows;
  if (to_images) {
    rows = input_rows(ids, B, T, images);
  } else {  // placeholders get no gradient: negative rows are skipped when there is no second table
    rows = ids;
    for (int32_t& r : rows) r = r < 0 ? -1 : r;
  }
  ops::scatter_add_rows(dx, Tensor::indices(rows, device), dembed ? dembed->view() : View{},
                        to_images ? dtokens->view() : View{});
}

Phi3VGrads Phi3VGrads::zeros_like(const Phi3VModel& m) {
  Phi3VGrads g;
  g.decoder = Phi3Grads::zeros_like(m.decoder);
  const Phi3VImageEmbedding& v = m.vision;
  auto z = [&](const Tensor& w) { return Tensor(w.shape(), DType::F32, m.device); };
  g.vision.clip = ClipGrads::zeros_like(v.clip);
  g.vision.glb_GN = z(v.glb_GN), g.vision.sub_GN = z(v.sub_GN);
  g.vision.p0_w = z(v.p0_w), g.vision.p0_b = z(v.p0_b);
  g.vision.p2_w = z(v.p2_w), g.vision.p2_b = z(v.p2_b);
  return g;
}

void Phi3VGrads::zero() {
  decoder.zero();
  vision.clip.zero();
  for (Tensor* t : {&vision.glb_GN, &vision.sub_GN, &vision.p0_w, &vision.p0_b, &vision.p2_w, &vision.p2_b})
    ops::fill(*t, 0.0f);
}

std::string phi3v_decoder_module(int64_t layer, int slot) {
  return "model.layers." + std::to_string(layer) + "." + phi3_slot_module(slot);
}

std::string phi3v_clip_module(int64_t layer, int slot) {
  return "model.vision_embed_tokens.img_processor.vision_model.encoder.layers." + std::to_string(layer) + "." +
         clip_slot_module(slot);
}

Phi3VLora Phi3VLora::create(const Phi3VModel& m, const LoraConfig& cfg, uint64_t seed) {
  Phi3VLora l;
  auto add = [&](const std::string& path, int64_t in, int64_t out) {
    if (!cfg.targets_module(path)) return -1;
    const int idx = int(l.adapters.size());
    l.adapters.push_back(make_lora(path, in, out, cfg, seed + 1000003ull * uint64_t(idx), m.device));
    return idx;
  };
  // The tower first: Phi3VModel registers vision_embed_tokens before the decoder layers.
  const int64_t Cv = m.vision.clip.cfg.hidden_size, Iv = m.vision.clip.cfg.intermediate_size;
  const int64_t cin[kClipSlots] = {Cv, Cv, Cv, Cv, Cv, Iv}, cout[kClipSlots] = {Cv, Cv, Cv, Cv, Iv, Cv};
  for (int64_t layer = 0; layer < int64_t(m.vision.clip.layers.size()); ++layer) {
    std::array<int, kClipSlots> idx;
    for (int s = 0; s < kClipSlots; ++s) idx[size_t(s)] = add(phi3v_clip_module(layer, s), cin[s], cout[s]);
    l.clip.push_back(idx);
  }
  const Phi3VConfig& c = m.cfg;
  const int64_t C = c.hidden_size, I = c.intermediate_size, D = c.head_dim();
  const int64_t QKV = (c.num_attention_heads + 2 * c.num_key_value_heads) * D, HD = c.num_attention_heads * D;
  const int64_t din[kPhi3Slots] = {C, HD, C, I}, dout[kPhi3Slots] = {QKV, C, 2 * I, C};
  for (int64_t layer = 0; layer < int64_t(m.decoder.layers.size()); ++layer) {
    std::array<int, kPhi3Slots> idx;
    for (int s = 0; s < kPhi3Slots; ++s) idx[size_t(s)] = add(phi3v_decoder_module(layer, s), din[s], dout[s]);
    l.dec.push_back(idx);
  }
  XV_CHECK(!l.adapters.empty(), "lora.targets [{}] match no Linear layer of the phi3_v model (decoder: qkv_proj, "
           "o_proj, gate_up_proj, down_proj; CLIP: q_proj, k_proj, v_proj, out_proj, fc1, fc2)", fmt::join(cfg.targets, ", "));
  return l;
}

Phi3DecoderLora Phi3VLora::decoder() {
  Phi3DecoderLora out;
  for (const auto& idx : dec) {
    std::array<LoraAdapter*, kPhi3Slots> p{};
    for (size_t s = 0; s < idx.size(); ++s) p[s] = idx[s] < 0 ? nullptr : &adapters[size_t(idx[s])];
    out.at.push_back(p);
  }
  return out;
}

ClipLora Phi3VLora::vision() {
  ClipLora out;
  for (const auto& idx : clip) {
    std::array<LoraAdapter*, kClipSlots> p{};
    for (size_t s = 0; s < idx.size(); ++s) p[s] = idx[s] < 0 ? nullptr : &adapters[size_t(idx[s])];
    out.at.push_back(p);
  }
  return out;
}

bool Phi3VLora::vision_adapted() const {
  for (const auto& idx : clip)
    for (int i : idx)
      if (i >= 0) return true;
  return false;
}

void Phi3VLora::zero_grad() {
  for (auto& a : adapters) a.zero_grad();
}

// Finds the next "<|image_N|>" (N decimal digits) at or after `from`; returns npos when none.
static size_t find_image_tag(const std::string& text, size_t from, size_t* len, long* n) {
  for (size_t p = text.find("<|image_", from); p != std::string::npos; p = text.find("<|image_", p + 1)) {
    size_t q = p + 8;
    long v = 0;
    while (q < text.size() && text[q] >= '0' && text[q] <= '9' && q - p < 16) v = v * 10 + (text[q++] - '0');
    if (q > p + 8 && text.compare(q, 2, "|>") == 0) {
      *len = q + 2 - p;
      *n = v;
      return p;
    }
  }
  return std::string::npos;
}

std::vector<int32_t> phi3v_prompt_ids(const Tokenizer& tok, const std::string& text,
                                      const std::vector<int64_t>& num_img_tokens) {
  std::vector<int32_t> out;
  size_t last = 0, len = 0;
  long k = 0;
  for (size_t p = find_image_tag(text, 0, &len, &k); p != std::string::npos; p = find_image_tag(text, last, &len, &k)) {
    auto chunk = tok.encode(std::string_view(text).substr(last, p - last), true);
    out.insert(out.end(), chunk.begin(), chunk.end());
    XV_CHECK(k >= 1 && size_t(k) <= num_img_tokens.size(), "prompt names <|image_{}|> but {} image(s) were given", k,
             num_img_tokens.size());
    out.insert(out.end(), size_t(num_img_tokens[size_t(k - 1)]), int32_t(-k));
    last = p + len;
  }
  auto chunk = tok.encode(std::string_view(text).substr(last), true);
  out.insert(out.end(), chunk.begin(), chunk.end());
  return out;
}

}  // namespace xv
