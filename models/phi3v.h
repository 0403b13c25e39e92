// Phi-3-vision (VLM2Vec's backbone): CLIP tower -> HD glue (2x2 merge, sub_GN / glb_GN separators) ->
// projector -> features written at the negative-id placeholder positions -> Phi-3 decoder.
// Inference, and the pieces training needs: LoRA over the decoder and the tower (Phi3VLora), the vision
// side over a batch of images with its backward (HD glue, projector and separators are frozen for LoRA; full
// fine-tuning, Phi3VGrads, trains them too), and the image-token scatter into the input embeddings with its
// adjoint.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "models/clip_vision.h"
#include "models/lora.h"
#include "models/phi3_decoder.h"
#include "image/phi3v_processor.h"

namespace xv {

class Tokenizer;

// What the vision backward needs from a forward over a batch of images.
struct Phi3VVisionActs {
  ClipActs clip;                  // the one CLIP pass over every image's crops
  std::vector<int32_t> layout;    // (n * 4) the HD layout of the stacked tokens (Phi3VImageEmbedding::hd_index)
  Tensor y_pre;                   // (n, Hd) img_projection.0 output, the GELU input
  Tensor f;                       // (n, 4C') the projector's input, kept when clip.full is set
};

// Full fine-tuning of the image side: the tower's gradients, the separators' and the projector's (same shapes
// as the weights; accumulated, +=).
struct Phi3VVisionGrads {
  ClipGrads clip;
  Tensor glb_GN, sub_GN, p0_w, p0_b, p2_w, p2_b;
};

// A batch of images' crops stacked for one CLIP pass, and where each image's crops and tokens lie.
struct Phi3VCropBatch {
  Tensor pixels;                  // (n_crops, 3, S, S) on the model's device
  std::vector<int64_t> crop0;     // per image: its first crop (the global view)
  std::vector<int64_t> tok0;      // per image: its first row in the stacked tokens
  std::vector<int64_t> h, w;      // per image: the HD crop grid
  std::vector<int64_t> ntok;      // per image: num_img_tokens
  int64_t n_crops = 0, n_tok = 0;
};

struct Phi3VImageEmbedding {
  ClipVision clip;
  std::string order = "sub_glb";
  Tensor glb_GN;  // (4C') model.vision_embed_tokens.glb_GN (1, 1, 4C')
  Tensor sub_GN;  // (4C') model.vision_embed_tokens.sub_GN (1, 1, 1, 4C')
  Tensor p0_w;    // (Hd, 4C') img_projection.0
  Tensor p0_b;    // (Hd)
  Tensor p2_w;    // (Hd, Hd) img_projection.2
  Tensor p2_b;    // (Hd)

  // Projected image tokens: (num_img_tokens, Hd).
  Tensor forward(const Phi3VImageInputs& img) const;

  // Where the HD sequence of an image of h x w crops comes from: per token, its four C'-wide blocks
  // [(dy, dx) = 00, 01, 10, 11] are rows crop * G*G + patch of the CLIP output (crops counted from the
  // image's global view), or all four are -1 for a sub_GN token, -2 for the glb_GN token. (n_tokens * 4).
  std::vector<int64_t> hd_layout(int64_t h, int64_t w) const;
  // The layouts of a batch of images as gather indices into the stacked CLIP rows (n_crops * G*G, C'), a
  // separator block q % 4 of sub_GN as -1 - q % 4 and of glb_GN as -5 - q % 4: (n_tok * 4).
  std::vector<int32_t> hd_index(const Phi3VCropBatch& crops) const;
  // Projected tokens of several images stacked in order: (sum of num_img_tokens, Hd), with one CLIP pass
  // over all their crops. With `lora`, the tower's adapters apply; with `acts`, backward's needs are kept.
  Tensor forward_images(const std::vector<const Phi3VImageInputs*>& imgs, const ClipLora* lora,
                        Phi3VVisionActs* acts, const LoraRun& run) const;
  // dtokens (sum of num_img_tokens, Hd) -> the tower's LoRA gradients (projector, separators and glue are
  // frozen; the gradient flows through them). `run` must be the forward's. With `grads` (full fine-tuning;
  // the forward's acts must have had clip.full set), every weight's gradient is accumulated there too.
  void backward(Phi3VVisionActs& acts, const Tensor& dtokens, const ClipLora& lora, const LoraRun& run,
                Phi3VVisionGrads* grads = nullptr) const;

  // The stages of forward_images and backward, for a caller that runs the tower layer by layer (the KD step
  // under FSDP units, core/units.h): stack_crops, the CLIP pass (ClipVision's stages), project;
  // backward: project_backward, then ClipVision's backward stages on acts.clip.
  Phi3VCropBatch stack_crops(const std::vector<const Phi3VImageInputs*>& imgs) const;
  // CLIP features (n_crops, num_patches, C') -> tokens (n_tok, Hd): HD glue, separators, projector. With
  // `acts`, the layout and the projector's activations are kept (its input f too with acts->clip.full).
  Tensor project(const Tensor& feats, const Phi3VCropBatch& crops, Phi3VVisionActs* acts) const;
  // dtokens (n_tok, Hd) -> dfeats (n_crops, num_patches, C') through the projector and the glue; with `grads`,
  // the projector's and separators' gradients are accumulated.
  Tensor project_backward(const Phi3VVisionActs& acts, const Tensor& dtokens, Phi3VVisionGrads* grads) const;
};

// One image's projected tokens within a stack of them (n_tok, C): rows [row0, row0 + n), for the scatter into
// the input embeddings.
struct ImageTokens {
  int64_t row0 = 0;
  int64_t n = 0;
};

struct Phi3VModel {
  Phi3VConfig cfg;
  Phi3Decoder decoder;
  Phi3VImageEmbedding vision;

  Device device;  // where every tensor of the model and of its passes lives

  static Phi3VModel load(const std::string& model_dir, const LoadOptions& o = {});

  // ids (B, T): token ids, or -k at the positions of image k of that row (k >= 1); mask (B, T) on the host.
  // images[b][k-1] is image k of row b. Returns the final hidden states (B, T, C) on the model's device.
  Tensor forward(const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B, int64_t T,
                 const std::vector<std::vector<const Phi3VImageInputs*>>& images) const;

  // Input embeddings (B, T, C): embed_tokens rows, and at the placeholders -k of row b the rows
  // images[b][k-1] of the stacked image tokens `tokens` (n_tok, C), in order (their counts must match).
  Tensor embed_inputs(const std::vector<int32_t>& ids, int64_t B, int64_t T, const Tensor& tokens,
                      const std::vector<std::vector<ImageTokens>>& images) const;
  // The adjoint: dtokens (n_tok, C) += the rows of dx (B, T, C) at the placeholders of images[b] (rows b past
  // images.size(), or an empty dtokens, give no image gradient). With `dembed` (full fine-tuning, the (V, C)
  // gradient of embed_tokens), the token rows of dx are accumulated there too; without, embed_tokens is
  // frozen.
  void embed_inputs_backward(const std::vector<int32_t>& ids, int64_t B, int64_t T, const Tensor& dx,
                             const std::vector<std::vector<ImageTokens>>& images, Tensor* dtokens,
                             Tensor* dembed = nullptr) const;
  // The (B*T) gather indices of embed_inputs: a token id, or -1 - (its row in the stacked image tokens).
  std::vector<int32_t> input_rows(const std::vector<int32_t>& ids, int64_t B, int64_t T,
                                  const std::vector<std::vector<ImageTokens>>& images) const;
};

// Full fine-tuning: one gradient per weight the embedding path uses.
struct Phi3VGrads {
  Phi3Grads decoder;
  Phi3VVisionGrads vision;

  static Phi3VGrads zeros_like(const Phi3VModel& m);  // F32 on the model's device
  void zero();
};

// LoRA module paths as PEFT sees them in the transformers model (Phi3VForCausalLM).
std::string phi3v_decoder_module(int64_t layer, int slot);  // "model.layers.<l>.self_attn.qkv_proj", ...
std::string phi3v_clip_module(int64_t layer, int slot);
// ^ "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.<l>.self_attn.q_proj", ...

// The LoRA adapters of a phi3_v student, over the decoder and the CLIP layers that run (the tower's last
// layer feeds nothing, so PEFT's adapters there never get a gradient and are not created here).
// dec[l][s] / clip[l][s] index `adapters`, or -1 where that Linear is not adapted.
struct Phi3VLora {
  std::vector<LoraAdapter> adapters;
  std::vector<std::array<int, kPhi3Slots>> dec;  // (decoder layers)
  std::vector<std::array<int, kClipSlots>> clip;  // (CLIP layers that run)

  static Phi3VLora create(const Phi3VModel& m, const LoraConfig& cfg, uint64_t seed);
  // Pointer maps for the forward and backward passes (valid while `adapters` is not resized).
  Phi3DecoderLora decoder();
  ClipLora vision();
  bool vision_adapted() const;
  void zero_grad();
};

// The Phi-3-vision processor's text side: splits `text` at <|image_N|> tags, tokenizes each chunk with
// special tokens (each chunk gets its own BOS, as the reference does), and puts -N repeated
// num_img_tokens[N-1] times at each tag.
std::vector<int32_t> phi3v_prompt_ids(const Tokenizer& tok, const std::string& text,
                                      const std::vector<int64_t>& num_img_tokens);

}  // namespace xv
