#include "models/phi3v.h"

#include <algorithm>

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

namespace {

// out (n, 4C) = the HD sequence: CLIP rows of `feats` (crops of one image, G*G rows each, C wide) or
// separators, as `layout` says.
void hd_gather(const float* feats, const std::vector<int64_t>& layout, const Tensor& sub_GN, const Tensor& glb_GN,
               int64_t C, float* out) {
  const int64_t n = int64_t(layout.size());
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < n; ++q) {
    const int64_t src = layout[size_t(q)];
    const float* from = src >= 0 ? feats + src * C : (src == -1 ? sub_GN.ptr() : glb_GN.ptr()) + (q % 4) * C;
    std::copy(from, from + C, out + q * C);
  }
}

// The adjoint: dfeats rows += the blocks of dout (n, 4C) they were copied to; the separators' blocks go to
// dsub / dglb (4C each) when given, else nowhere (frozen).
void hd_scatter(const float* dout, const std::vector<int64_t>& layout, int64_t C, float* dfeats, float* dsub = nullptr,
                float* dglb = nullptr) {
  const int64_t n = int64_t(layout.size());
  for (int64_t q = 0; q < n; ++q) {
    const int64_t src = layout[size_t(q)];
    float* dst = src >= 0 ? dfeats + src * C : (src == -1 ? dsub : dglb);
    if (!dst) continue;
    if (src < 0) dst += (q % 4) * C;
    const float* d = dout + q * C;
    for (int64_t c = 0; c < C; ++c) dst[c] += d[c];
  }
}

}  // namespace

Tensor Phi3VImageEmbedding::hd_features(const Phi3VImageInputs& img) const {
  const int64_t C = clip.cfg.hidden_size, C4 = 4 * C;
  const int64_t h = img.height / kPhi3VCropSize, w = img.width / kPhi3VCropSize;
  const int64_t n_crops = 1 + h * w;
  XV_CHECK(img.pixel_values.dim(0) >= n_crops, "phi3_v: image of {}x{} needs {} crops, pixel_values has {}",
           img.height, img.width, n_crops, img.pixel_values.dim(0));
  // feats (n_crops, G*G, C): crop 0 is the global view, then the h x w sub-crops row-major.
  Tensor feats = clip.forward_patches(img.pixel_values.ptr(), n_crops);
  const std::vector<int64_t> layout = hd_layout(h, w);
  Tensor out({int64_t(layout.size()) / 4, C4});
  hd_gather(feats.ptr(), layout, sub_GN, glb_GN, C, out.ptr());
  XV_CHECK(out.dim(0) == img.num_img_tokens, "phi3_v: HD features give {} tokens, the processor counted {}",
           out.dim(0), img.num_img_tokens);
  return out;
}

Tensor Phi3VImageEmbedding::forward(const Phi3VImageInputs& img) const {
  Tensor f = hd_features(img);
  const int64_t n = f.dim(0), C4 = f.dim(1), Hd = p0_w.dim(0);
  Tensor y({n, Hd}), z({n, Hd});
  ops::linear(f.ptr(), p0_w.ptr(), p0_b.ptr(), y.ptr(), n, C4, Hd);
  ops::gelu_erf(y.ptr(), n * Hd);
  ops::linear(y.ptr(), p2_w.ptr(), p2_b.ptr(), z.ptr(), n, Hd, Hd);
  return z;
}

Phi3VCropBatch Phi3VImageEmbedding::stack_crops(const std::vector<const Phi3VImageInputs*>& imgs) const {
  const int64_t S = clip.cfg.image_size, CH = clip.cfg.num_channels;
  const int64_t crop_px = CH * S * S;
  Phi3VCropBatch cb;
  for (const Phi3VImageInputs* img : imgs) {
    const int64_t h = img->height / kPhi3VCropSize, w = img->width / kPhi3VCropSize;
    XV_CHECK(img->pixel_values.dim(0) >= 1 + h * w && img->pixel_values.numel() / img->pixel_values.dim(0) == crop_px,
             "phi3_v: image of {}x{} needs {} crops of {}x{}, pixel_values has shape {}", img->height, img->width,
             1 + h * w, S, S, shape_str(img->pixel_values.shape));
    cb.crop0.push_back(cb.n_crops), cb.tok0.push_back(cb.n_tok), cb.h.push_back(h), cb.w.push_back(w);
    cb.ntok.push_back(img->num_img_tokens);
    cb.n_crops += 1 + h * w;
    cb.n_tok += img->num_img_tokens;
  }
  // The crops that run, of every image, in one stack: (n_crops, 3, S, S).
  cb.pixels = Tensor({cb.n_crops, CH, S, S});
  for (size_t i = 0; i < imgs.size(); ++i)
    std::copy(imgs[i]->pixel_values.ptr(), imgs[i]->pixel_values.ptr() + (1 + cb.h[i] * cb.w[i]) * crop_px,
              cb.pixels.ptr() + cb.crop0[i] * crop_px);
  return cb;
}

Tensor Phi3VImageEmbedding::forward_images(const std::vector<const Phi3VImageInputs*>& imgs, const ClipLora* lora,
                                           Phi3VVisionActs* acts, const LoraRun& run) const {
  const Phi3VCropBatch cb = stack_crops(imgs);
  const Tensor feats = clip.forward_patches(cb.pixels.ptr(), cb.n_crops, lora, acts ? &acts->clip : nullptr, run);
  return project(feats, cb, acts);
}

Tensor Phi3VImageEmbedding::project(const Tensor& feats, const Phi3VCropBatch& cb, Phi3VVisionActs* acts) const {
  const int64_t C = clip.cfg.hidden_size, C4 = 4 * C, Hd = p0_w.dim(0), NPATCH = clip.cfg.num_patches();
  XV_CHECK(feats.numel() == cb.n_crops * NPATCH * C, "phi3_v: CLIP features must be ({}, {}, {})", cb.n_crops, NPATCH,
           C);
  Tensor f({cb.n_tok, C4});
  for (size_t i = 0; i < cb.crop0.size(); ++i) {
    const std::vector<int64_t> layout = hd_layout(cb.h[i], cb.w[i]);
    XV_CHECK(int64_t(layout.size()) / 4 == cb.ntok[i], "phi3_v: HD features give {} tokens, the processor counted {}",
             layout.size() / 4, cb.ntok[i]);
    hd_gather(feats.ptr() + cb.crop0[i] * NPATCH * C, layout, sub_GN, glb_GN, C, f.ptr() + cb.tok0[i] * C4);
  }
  // Projector: Linear(4C' -> Hd) - GELU - Linear(Hd -> Hd).
  const int64_t n_tok = cb.n_tok;
  Tensor y_pre({n_tok, Hd}), z({n_tok, Hd});
  ops::linear(f.ptr(), p0_w.ptr(), p0_b.ptr(), y_pre.ptr(), n_tok, C4, Hd);
  Tensor y = y_pre;
  ops::gelu_erf(y.ptr(), n_tok * Hd);
  ops::linear(y.ptr(), p2_w.ptr(), p2_b.ptr(), z.ptr(), n_tok, Hd, Hd);
  if (acts && acts->clip.full) acts->f = std::move(f);
  if (acts) {
    acts->crop0 = cb.crop0, acts->tok0 = cb.tok0, acts->h = cb.h, acts->w = cb.w;
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
  const int64_t n_tok = acts.y_pre.dim(0);
  XV_CHECK(dtokens.numel() == n_tok * Hd, "phi3_v vision backward: dtokens must be ({}, {})", n_tok, Hd);
  Tensor dy({n_tok, Hd}), df({n_tok, C4});
  if (!grads) {  // through the frozen projector: dy = dz W2, GELU, df = dy W0
    ops::linear_backward(nullptr, p2_w.ptr(), dtokens.ptr(), dy.ptr(), nullptr, nullptr, n_tok, Hd, Hd);
    ops::gelu_erf_backward(acts.y_pre.ptr(), dy.ptr(), dy.ptr(), n_tok * Hd);
    ops::linear_backward(nullptr, p0_w.ptr(), dy.ptr(), df.ptr(), nullptr, nullptr, n_tok, C4, Hd);
  } else {  // the same, with the projector's gradients (the GELU output recomputed from its input)
    XV_CHECK(acts.f.numel() == n_tok * C4, "phi3_v vision backward: full gradients need a forward with clip.full");
    Tensor y = acts.y_pre;
    ops::gelu_erf(y.ptr(), n_tok * Hd);
    ops::linear_backward(y.ptr(), p2_w.ptr(), dtokens.ptr(), dy.ptr(), grads->p2_w.ptr(), grads->p2_b.ptr(), n_tok, Hd,
                         Hd);
    ops::gelu_erf_backward(acts.y_pre.ptr(), dy.ptr(), dy.ptr(), n_tok * Hd);
    ops::linear_backward(acts.f.ptr(), p0_w.ptr(), dy.ptr(), df.ptr(), grads->p0_w.ptr(), grads->p0_b.ptr(), n_tok,
                         C4, Hd);
  }
  // Through the HD glue to the CLIP outputs (and the separators, when they train).
  Tensor dfeats({acts.clip.N, NPATCH, C});
  for (size_t i = 0; i < acts.crop0.size(); ++i)
    hd_scatter(df.ptr() + acts.tok0[i] * C4, hd_layout(acts.h[i], acts.w[i]), C,
               dfeats.ptr() + acts.crop0[i] * NPATCH * C, grads ? grads->sub_GN.ptr() : nullptr,
               grads ? grads->glb_GN.ptr() : nullptr);
  return dfeats;
}

Phi3VModel Phi3VModel::load(const std::string& model_dir, bool shapes_only) {
  Phi3VModel m;
  m.cfg = load_phi3v_config(model_dir);
  WeightStore ws = WeightStore::open_dir(model_dir);
  ws.set_shapes_only(shapes_only);
  m.decoder = Phi3Decoder::from_weights(m.cfg, ws);
  const std::string p = "model.vision_embed_tokens.";
  const int64_t C4 = 4 * m.cfg.image_dim_out, Hd = m.cfg.hidden_size;
  Phi3VImageEmbedding& v = m.vision;
  v.clip = ClipVision::from_weights(m.cfg.vision, m.cfg.layer_idx, ws, p + "img_processor.");
  v.order = m.cfg.hd_transform_order;
  v.glb_GN = ws.get(p + "glb_GN", {1, 1, C4});
  v.sub_GN = ws.get(p + "sub_GN", {1, 1, 1, C4});
  v.p0_w = ws.get(p + "img_projection.0.weight", {Hd, C4});
  v.p0_b = ws.get(p + "img_projection.0.bias", {Hd});
  v.p2_w = ws.get(p + "img_projection.2.weight", {Hd, Hd});
  v.p2_b = ws.get(p + "img_projection.2.bias", {Hd});
  return m;
}

Tensor Phi3VModel::forward(const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B, int64_t T,
                           const std::vector<std::vector<const Phi3VImageInputs*>>& images) const {
  const int64_t N = B * T;
  XV_CHECK(int64_t(ids.size()) == N && int64_t(mask.size()) == N, "phi3_v forward: ids/mask must hold B*T = {}", N);
  XV_CHECK(T <= cfg.max_position_embeddings, "phi3_v: sequence length {} exceeds max_position_embeddings {}", T,
           cfg.max_position_embeddings);
  // Each image's projected tokens, then the scatter into the embeddings.
  std::vector<std::vector<Tensor>> feats(static_cast<size_t>(B));
  std::vector<std::vector<ImageTokens>> toks(static_cast<size_t>(B));
  for (int64_t b = 0; b < B && b < int64_t(images.size()); ++b)
    for (const Phi3VImageInputs* img : images[size_t(b)]) {
      feats[size_t(b)].push_back(vision.forward(*img));
      toks[size_t(b)].push_back({feats[size_t(b)].back().ptr(), feats[size_t(b)].back().dim(0)});
    }
  Tensor x = embed_inputs(ids, B, T, toks);
  decoder.forward(x, mask, B, T);
  return x;
}

Tensor Phi3VModel::embed_inputs(const std::vector<int32_t>& ids, int64_t B, int64_t T,
                                const std::vector<std::vector<ImageTokens>>& images) const {
  const int64_t C = cfg.hidden_size;
  XV_CHECK(int64_t(ids.size()) == B * T, "phi3_v forward: ids must hold B*T = {}", B * T);
  Tensor x({B, T, C});
  const std::vector<ImageTokens> none;
  for (int64_t b = 0; b < B; ++b) {
    const auto& imgs = b < int64_t(images.size()) ? images[size_t(b)] : none;
    std::vector<int64_t> used(imgs.size(), 0);
    for (int64_t t = 0; t < T; ++t) {
      const int32_t id = ids[size_t(b * T + t)];
      float* dst = x.ptr() + (b * T + t) * C;
      if (id >= 0) {
        XV_CHECK(id < cfg.vocab_size, "phi3_v: token id {} outside the vocabulary [0, {})", id, cfg.vocab_size);
        std::copy(decoder.embed.ptr() + int64_t(id) * C, decoder.embed.ptr() + (int64_t(id) + 1) * C, dst);
        continue;
      }
      const size_t k = size_t(-int64_t(id) - 1);
      XV_CHECK(k < imgs.size(), "phi3_v: row {} has a placeholder for image {} but only {} image(s)", b, k + 1,
               imgs.size());
      XV_CHECK(used[k] < imgs[k].n, "phi3_v: row {} has more placeholders for image {} than its {} tokens", b, k + 1,
               imgs[k].n);
      std::copy(imgs[k].p + used[k] * C, imgs[k].p + (used[k] + 1) * C, dst);
      ++used[k];
    }
    for (size_t k = 0; k < imgs.size(); ++k)
      XV_CHECK(used[k] == imgs[k].n, "phi3_v: row {} has {} placeholders for image {}, expected {}", b, used[k], k + 1,
               imgs[k].n);
  }
  return x;
}

void Phi3VModel::embed_inputs_backward(const std::vector<int32_t>& ids, int64_t B, int64_t T, const Tensor& dx,
                                       const std::vector<std::vector<float*>>& dimages, float* dembed) const {
  const int64_t C = cfg.hidden_size;
  XV_CHECK(int64_t(ids.size()) == B * T && dx.numel() == B * T * C,
           "phi3_v backward: ids/dx must hold B*T = {} rows", B * T);
  for (int64_t b = 0; b < B && (dembed || b < int64_t(dimages.size())); ++b) {
    const bool has_img = b < int64_t(dimages.size());
    std::vector<int64_t> used(has_img ? dimages[size_t(b)].size() : 0, 0);
    for (int64_t t = 0; t < T; ++t) {
      const int32_t id = ids[size_t(b * T + t)];
      if (id >= 0) {
        if (dembed) ops::embedding_backward(&id, dx.ptr() + (b * T + t) * C, dembed, 1, C);
        continue;
      }
      if (!has_img) continue;
      const size_t k = size_t(-int64_t(id) - 1);
      XV_CHECK(k < used.size(), "phi3_v: row {} has a placeholder for image {} but only {} image(s)", b, k + 1,
               used.size());
      float* dst = dimages[size_t(b)][k] + used[k]++ * C;
      const float* src = dx.ptr() + (b * T + t) * C;
      for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
    }
  }
}

Phi3VGrads Phi3VGrads::zeros_like(const Phi3VModel& m) {
  Phi3VGrads g;
  g.decoder = Phi3Grads::zeros_like(m.decoder);
  const Phi3VImageEmbedding& v = m.vision;
  g.vision.clip = ClipGrads::zeros_like(v.clip);
  g.vision.glb_GN = Tensor(v.glb_GN.shape), g.vision.sub_GN = Tensor(v.sub_GN.shape);
  g.vision.p0_w = Tensor(v.p0_w.shape), g.vision.p0_b = Tensor(v.p0_b.shape);
  g.vision.p2_w = Tensor(v.p2_w.shape), g.vision.p2_b = Tensor(v.p2_b.shape);
  return g;
}

void Phi3VGrads::zero() {
  decoder.zero();
  vision.clip.zero();
  for (Tensor* t : {&vision.glb_GN, &vision.sub_GN, &vision.p0_w, &vision.p0_b, &vision.p2_w, &vision.p2_b})
    std::fill(t->data.begin(), t->data.end(), 0.0f);
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
    l.adapters.push_back(make_lora(path, in, out, cfg, seed + 1000003ull * uint64_t(idx)));
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
  XV_CHECK(!l.adapters.empty(), "lora: target_modules match no Linear layer of the phi3_v model (decoder: "
           "qkv_proj, o_proj, gate_up_proj, down_proj; CLIP: q_proj, k_proj, v_proj, out_proj, fc1, fc2)");
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
