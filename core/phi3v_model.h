// Phi-3-vision (VLM2Vec's backbone): CLIP tower -> HD glue (2x2 merge, sub_GN / glb_GN separators) ->
// projector -> features written at the negative-id placeholder positions -> Phi-3 decoder.
#pragma once
#include <string>
#include <vector>

#include "core/clip_vision.h"
#include "core/phi3_decoder.h"
#include "core/phi3v_image_processor.h"

namespace xv {

class Tokenizer;

struct Phi3VImageEmbedding {
  ClipVision clip;
  std::string order = "sub_glb";
  Tensor glb_GN;  // (4C') model.vision_embed_tokens.glb_GN (1, 1, 4C')
  Tensor sub_GN;  // (4C') model.vision_embed_tokens.sub_GN (1, 1, 1, 4C')
  Tensor p0_w;    // (Hd, 4C') img_projection.0
  Tensor p0_b;    // (Hd)
  Tensor p2_w;    // (Hd, Hd) img_projection.2
  Tensor p2_b;    // (Hd)

  // The HD feature sequence before projection: (num_img_tokens, 4C').
  Tensor hd_features(const Phi3VImageInputs& img) const;
  // Projected image tokens: (num_img_tokens, Hd).
  Tensor forward(const Phi3VImageInputs& img) const;
};

struct Phi3VModel {
  Phi3VConfig cfg;
  Phi3Decoder decoder;
  Phi3VImageEmbedding vision;

  static Phi3VModel load(const std::string& model_dir);

  // ids (B, T): token ids, or -k at the positions of image k of that row (k >= 1); mask (B, T).
  // images[b][k-1] is image k of row b. Returns the final hidden states (B, T, C).
  Tensor forward(const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B, int64_t T,
                 const std::vector<std::vector<const Phi3VImageInputs*>>& images) const;
};

// The Phi-3-vision processor's text side: splits `text` at <|image_N|> tags, tokenizes each chunk with
// special tokens (each chunk gets its own BOS, as the reference does), and puts -N repeated
// num_img_tokens[N-1] times at each tag.
std::vector<int32_t> phi3v_prompt_ids(const Tokenizer& tok, const std::string& text,
                                      const std::vector<int64_t>& num_img_tokens);

}  // namespace xv
