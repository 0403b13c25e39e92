// CLIP vision tower (pre-LN ViT, quick_gelu, CLS token + learned positions) as Phi-3-vision uses it:
// features are the hidden states of layer `layer_idx` (-2: the input of the last layer), so only the
// layers up to there run; post_layernorm is never applied.
// Forward for inference and for training (LoRA on the attention and MLP Linear layers, activations kept or
// checkpointed per layer), and the backward pass to the LoRA tensors (the embeddings are frozen, so the
// gradient stops at the first layer).
#pragma once
#include <array>
#include <string>
#include <vector>

#include "core/lora.h"
#include "core/model_config.h"
#include "core/tensor.h"

namespace xv {

class WeightStore;

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
  std::array<Tensor, kClipSlots> xd;  // (R, in) per adapted slot, only when dropout is on
};
struct ClipActs {
  bool checkpointing = false;  // set before forward: keep only each layer's input, recompute in backward
  int64_t N = 0;               // images (crops) in the pass
  std::vector<ClipLayerActs> layers;
};

struct ClipVision {
  ClipVisionConfig cfg;
  int layer_idx = -2;
  Tensor patch_w;    // (C, 3*P*P): Conv2d(3, C, P, stride P, bias=False) weight flattened
  Tensor class_emb;  // (C)
  Tensor pos_emb;    // (1 + num_patches, C)
  Tensor pre_ln_g, pre_ln_b;  // (C)
  std::vector<ClipLayer> layers;  // only the layers that feed layer_idx are loaded

  static ClipVision from_weights(const ClipVisionConfig& cfg, int layer_idx, const WeightStore& ws,
                                 const std::string& prefix);
  // pixels (N, 3, S, S) -> hidden state `layer_idx` without the CLS token: (N, num_patches, C).
  Tensor forward_patches(const float* pixels, int64_t N) const;
  // The same with LoRA (`lora` null: the frozen tower); with `acts`, what backward needs is kept. `run`
  // carries the LoRA dropout seed of this pass.
  Tensor forward_patches(const float* pixels, int64_t N, const ClipLora* lora, ClipActs* acts,
                         const LoraRun& run) const;
  // dpatches (N, num_patches, C) at the output -> LoRA gradients accumulated into the adapters of `lora`.
  // `run` must be the forward's.
  void backward(ClipActs& acts, const Tensor& dpatches, const ClipLora& lora, const LoraRun& run) const;

  // Embeddings + pre-LayerNorm: (N * (1 + num_patches), C).
  Tensor embed(const float* pixels, int64_t N) const;
  // Layer l on x (N*T, C), in place; fills `acts` when given.
  void layer_forward(int64_t l, Tensor& x, int64_t N, const ClipLora* lora, const LoraRun& run,
                     ClipLayerActs* acts) const;
};

}  // namespace xv
