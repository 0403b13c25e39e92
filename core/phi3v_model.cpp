#include "core/phi3v_model.h"


#include "core/safetensors.h"
#include "core/tokenizer.h"
#include "kernels/ops.h"

namespace xv {

Tensor Phi3VImageEmbedding::hd_features(const Phi3VImageInputs& img) const {
  const int64_t C = clip.cfg.hidden_size, C4 = 4 * C;
  const int64_t G = clip.cfg.image_size / clip.cfg.patch_size, M = G / 2;  // 24 patches, 12 merged
  const int64_t h = img.height / 336, w = img.width / 336;
  const int64_t n_crops = 1 + h * w;
  XV_CHECK(img.pixel_values.dim(0) >= n_crops, "phi3_v: image of {}x{} needs {} crops, pixel_values has {}",
           img.height, img.width, n_crops, img.pixel_values.dim(0));
  // feats (n_crops, G*G, C): crop 0 is the global view, then the h x w sub-crops row-major.
  Tensor feats = clip.forward_patches(img.pixel_values.ptr(), n_crops);
  // merged(crop, i, j) (4C'): the 2x2 block (2i+dy, 2j+dx) laid out as [(dy, dx) = 00, 01, 10, 11] x C.
  auto merged = [&](int64_t crop, int64_t i, int64_t j, float* dst) {
    for (int64_t dy = 0; dy < 2; ++dy)
      for (int64_t dx = 0; dx < 2; ++dx) {
        const float* src = feats.ptr() + (crop * G * G + (2 * i + dy) * G + (2 * j + dx)) * C;
        std::copy(src, src + C, dst + (dy * 2 + dx) * C);
      }
  };
  const int64_t n_sub = h * M * (w * M + 1), n_glb = M * (M + 1);
  Tensor out({n_sub + 1 + n_glb, C4});
  const int64_t sub_at = order == "sub_glb" ? 0 : n_glb + 1;
  const int64_t glb_at = order == "sub_glb" ? n_sub + 1 : 0;
  const int64_t sep_at = order == "sub_glb" ? n_sub : n_glb;
  // Sub-image grid: rows of w*M merged tokens followed by sub_GN, h*M rows.
  for (int64_t r = 0; r < h * M; ++r) {
    float* row = out.ptr() + (sub_at + r * (w * M + 1)) * C4;
    for (int64_t col = 0; col < w * M; ++col)
      merged(1 + (r / M) * w + col / M, r % M, col % M, row + col * C4);
    std::copy(sub_GN.data.begin(), sub_GN.data.end(), row + w * M * C4);
  }
  std::copy(glb_GN.data.begin(), glb_GN.data.end(), out.ptr() + sep_at * C4);
  // Global view: M rows of M tokens, each row closed by sub_GN (the reference uses sub_GN here too).
  for (int64_t r = 0; r < M; ++r) {
    float* row = out.ptr() + (glb_at + r * (M + 1)) * C4;
    for (int64_t col = 0; col < M; ++col) merged(0, r, col, row + col * C4);
    std::copy(sub_GN.data.begin(), sub_GN.data.end(), row + M * C4);
  }
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

Phi3VModel Phi3VModel::load(const std::string& model_dir) {
  Phi3VModel m;
  m.cfg = load_phi3v_config(model_dir);
  WeightStore ws = WeightStore::open_dir(model_dir);
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
  const int64_t C = cfg.hidden_size, N = B * T;
  XV_CHECK(int64_t(ids.size()) == N && int64_t(mask.size()) == N, "phi3_v forward: ids/mask must hold B*T = {}", N);
  XV_CHECK(T <= cfg.max_position_embeddings, "phi3_v: sequence length {} exceeds max_position_embeddings {}", T,
           cfg.max_position_embeddings);
  Tensor x({B, T, C});
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<const Phi3VImageInputs*> none;
    const auto& imgs = b < int64_t(images.size()) ? images[size_t(b)] : none;
    std::vector<Tensor> feats(imgs.size());
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
      if (feats[k].empty()) feats[k] = vision.forward(*imgs[k]);
      XV_CHECK(used[k] < feats[k].dim(0), "phi3_v: row {} has more placeholders for image {} than its {} tokens", b,
               k + 1, feats[k].dim(0));
      std::copy(feats[k].ptr() + used[k] * C, feats[k].ptr() + (used[k] + 1) * C, dst);
      ++used[k];
    }
    for (size_t k = 0; k < imgs.size(); ++k)
      XV_CHECK(used[k] == imgs[k]->num_img_tokens, "phi3_v: row {} has {} placeholders for image {}, expected {}", b,
               used[k], k + 1, imgs[k]->num_img_tokens);
  }
  decoder.forward(x, mask, B, T);
  return x;
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
