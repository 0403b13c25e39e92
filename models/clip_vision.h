// CLIP vision tower (pre-LN ViT, quick_gelu, CLS token + learned positions) as Phi-3-vision uses it:
// features are the hidden states of layer `layer_idx` (-2: the input of the last layer), so only the
// layers up to there run; post_layernorm is never applied.
// Forward for inference and for training (LoRA on the attention and MLP Linear layers, activations kept or
// checkpointed per layer), and the backward pass to the LoRA tensors (the embeddings are frozen, so the
// gradient stops at the first layer) or, for full fine-tuning (ClipGrads), to every weight that runs, down
// through pre_layrnorm into the patch, class and position embeddings.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/tensor.h"
#include "models/load_options.h"
#include "models/lora.h"

namespace xv {

class WeightStore;
struct ClipVision;

struct ClipLayer {
  Tensor ln1_g, ln1_b;  // (C)
  Tensor qkv_w;         // (3C, C) q_proj, k_proj, v_proj stacked at load
  Tensor qkv_b;         // (3C)
  Tensor out_w;         // (C, C)
  Tensor out_b;         // (C)
  Tensor ln2_g, ln2_b;  // (C)
  Tensor fc1_w;         // (I, C)
  Tensor fc1_b;         // (I)
  Tensor fc2_w;         // (C, I)
  Tensor fc2_b;         // (C)
};

// The Linear layers of a CLIP layer that LoRA can adapt; module names as PEFT sees them under
// "<tower>.vision_model.encoder.layers.<l>.".
enum ClipSlot { kClipQ, kClipK, kClipV, kClipOut, kClipFc1, kClipFc2, kClipSlots };
const char* clip_slot_module(int slot);  // "self_attn.q_proj", ..., "self_attn.out_proj", "mlp.fc1", "mlp.fc2"

// The tower's adapters: at[l][s] points into storage the caller owns, null where (l, s) is not adapted.
// Adapter (l, s) draws its dropout stream from LoraRun::for_adapter(l * kClipSlots + s).
struct ClipLora {
  std::vector<std::array<LoraAdapter*, kClipSlots>> at;  // (layers that run)
};

// What backward needs from one layer (R = N * (1 + num_patches) rows).
struct ClipLayerActs {
  Tensor x_in;   // (R, C) layer input: the only thing kept with checkpointing
  Tensor h1;     // (R, C) layer_norm1(x_in)
  Tensor qkv;    // (R, 3C) q, k, v projections, LoRA included
  Tensor att;    // (R, C) attention output
  Tensor x_mid;  // (R, C) x_in + out_proj(att)
  Tensor h2;     // (R, C) layer_norm2(x_mid)
  Tensor pre;    // (R, I) fc1(h2), the activation's input
  Tensor act;    // (R, I) activation output
  std::array<Tensor, kClipSlots> xa;  // (R, r) per adapted slot
};
struct ClipActs {
  bool checkpointing = false;  // set before forward: keep only each layer's input, recompute in backward
  bool full = false;           // set before forward: keep the embeddings' inputs too (full fine-tuning)
  int64_t N = 0;               // images (crops) in the pass
  std::vector<ClipLayerActs> layers;
  Tensor cols;   // (N * num_patches, 3*P*P) im2col of the pixels, with `full`
  Tensor x_emb;  // (R, C) the pre_layrnorm input, with `full`
};

// Full fine-tuning: one gradient per weight of ClipVision (same shapes; accumulated, +=). The attention's
// q/k/v are the fused qkv_w/qkv_b rows [q | k | v], as ClipLayer holds them.
struct ClipLayerGrads {
  Tensor ln1_g, ln1_b, qkv_w, qkv_b, out_w, out_b, ln2_g, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};
struct ClipGrads {
  Tensor patch_w, class_emb, pos_emb, pre_ln_g, pre_ln_b;
  std::vector<ClipLayerGrads> layers;

  static ClipGrads zeros_like(const ClipVision& m);  // F32 on the tower's device
  void zero();
};

struct ClipVision {
  ClipVisionConfig cfg;
  Device device;  // where every tensor of the tower and of its passes lives
  int layer_idx = -2;
  Tensor patch_w;    // (C, 3*P*P): Conv2d(3, C, P, stride P, bias=False) weight flattened
  Tensor class_emb;  // (C)
  Tensor pos_emb;    // (1 + num_patches, C)
  Tensor pre_ln_g, pre_ln_b;  // (C)
  std::vector<ClipLayer> layers;  // only the layers that feed layer_idx are loaded

  static ClipVision from_weights(const ClipVisionConfig& cfg, int layer_idx, const WeightStore& ws,
                                 const std::string& prefix, const LoadOptions& o = {});
  // pixels (N, 3, S, S) on the tower's device -> hidden state `layer_idx` without the CLS token:
  // (N, num_patches, C). With LoRA (`lora` null: the frozen tower); with `acts`, what backward needs is kept.
  // `run` carries the LoRA dropout seed of this pass.
  Tensor forward_patches(const Tensor& pixels, const ClipLora* lora, ClipActs* acts, const LoraRun& run) const;
  // dpatches (N, num_patches, C) at the output -> LoRA gradients accumulated into the adapters of `lora`.
  // `run` must be the forward's. With `grads` (full fine-tuning; the forward's acts must have had `full`
  // set), every weight's gradient is accumulated there too, down into the embeddings; without, nothing
  // below layer 0's adapters is computed (the LoRA path).
  void backward(ClipActs& acts, const Tensor& dpatches, const ClipLora& lora, const LoraRun& run,
                ClipGrads* grads = nullptr) const;

  // Embeddings + pre-LayerNorm: (N * (1 + num_patches), C). With `cols` / `x_emb`, the im2col patches and
  // the pre_layrnorm input are kept there (for the embeddings' backward).
  Tensor embed(const Tensor& pixels, Tensor* cols = nullptr, Tensor* x_emb = nullptr) const;
  // Layer l on x (N*T, C), in place; fills `acts` when given.
  void layer_forward(int64_t l, Tensor& x, int64_t N, const ClipLora* lora, const LoraRun& run,
                     ClipLayerActs* acts) const;

  // The stages of forward_patches (training) and backward, for a caller that runs the tower layer by layer
  // (the KD step, bracketing each layer group's weights: core/units.h). Forward: embed,
  // begin_acts, layer_forward_kept per layer, drop_cls. Backward: backward_begin, layer_backward from the last
  // layer down, embeddings_backward (full fine-tuning only).
  void begin_acts(ClipActs& acts, int64_t N) const;
  // Layer l of a training pass: keeps all its activations in acts, or only its input with checkpointing.
  void layer_forward_kept(int64_t l, Tensor& x, ClipActs& acts, const ClipLora* lora, const LoraRun& run) const;
  // x (N * (1 + num_patches), C) -> (N, num_patches, C), the CLS rows dropped.
  Tensor drop_cls(const Tensor& x, int64_t N) const;
  // dpatches (N, num_patches, C) -> dx (N * (1 + num_patches), C) at the last layer's output (0 at CLS rows).
  Tensor backward_begin(const ClipActs& acts, const Tensor& dpatches, const ClipLora& lora,
                        const ClipGrads* grads) const;
  // dx at layer l's output -> at its input, in place (layer 0 without `grads`: only the adapters' gradients,
  // dx is left as it is).
  void layer_backward(int64_t l, ClipActs& acts, Tensor& dx, const ClipLora& lora, const LoraRun& run,
                      ClipGrads* grads) const;
  // dx at the embeddings' output -> the embeddings' and pre_layrnorm's gradients (acts from a `full` pass).
  void embeddings_backward(const ClipActs& acts, const Tensor& dx, ClipGrads& grads) const;
};

}  // namespace xv
