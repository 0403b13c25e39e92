// Phi-3 decoder (as in Phi-3.5-vision): RMSNorm, fused qkv_proj, RoPE (plain or su/longrope),
// causal attention with a key padding mask, fused gate_up_proj with SwiGLU, final RMSNorm.
// Forward for inference and for training (LoRA on the four Linear layers, activations kept for backward or
// only each layer's input with checkpointing), and the backward pass to the LoRA tensors and to the input
// embeddings (where the image tokens enter), or for full fine-tuning (Phi3Grads) to every weight too.
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
struct Phi3Decoder;

struct Phi3Layer {
  Tensor in_ln;      // (C) input_layernorm
  Tensor qkv_w;      // ((Hq + 2 Hkv) D, C) self_attn.qkv_proj
  Tensor o_w;        // (C, Hq D) self_attn.o_proj
  Tensor post_ln;    // (C) post_attention_layernorm
  Tensor gate_up_w;  // (2 I, C) mlp.gate_up_proj: [gate | up]
  Tensor down_w;     // (C, I) mlp.down_proj
};

// The Linear layers of a decoder layer that LoRA can adapt; module names as PEFT sees them under
// "model.layers.<l>.".
enum Phi3Slot { kPhi3Qkv, kPhi3O, kPhi3GateUp, kPhi3Down, kPhi3Slots };
const char* phi3_slot_module(int slot);  // "self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"

// The decoder's adapters: at[l][s] points into storage the caller owns, null where (l, s) is not adapted.
// Adapter (l, s) draws its dropout stream from LoraRun::for_adapter(l * kPhi3Slots + s).
struct Phi3DecoderLora {
  std::vector<std::array<LoraAdapter*, kPhi3Slots>> at;  // (L)
};

// What backward needs from one layer (N = B*T rows, QKV = (Hq + 2 Hkv) D).
struct Phi3LayerActs {
  Tensor x_in;   // (N, C) layer input: the only thing kept with checkpointing
  Tensor h1;     // (N, C) input_layernorm(x_in)
  Tensor qkv;    // (N, QKV) qkv_proj(h1), LoRA included, RoPE applied to q and k
  Tensor att;    // (N, Hq D) attention output
  Tensor x_mid;  // (N, C) x_in + o_proj(att)
  Tensor h2;     // (N, C) post_attention_layernorm(x_mid)
  Tensor gu;     // (N, 2I) gate_up_proj(h2)
  Tensor act;    // (N, I) silu(gate) * up
  std::array<Tensor, kPhi3Slots> xa;  // (N, r) per adapted slot: dropout(x) A^T
};
struct Phi3Acts {
  bool checkpointing = false;  // set before forward: keep only each layer's input, recompute in backward
  int64_t B = 0, T = 0;
  Tensor mask;      // (B, T) F32
  Tensor cos, sin;  // (T, D) the RoPE tables of this pass
  std::vector<Phi3LayerActs> layers;
  Tensor x_last;  // (N, C) the input of the final norm
};

// Full fine-tuning: one gradient per weight of Phi3Decoder (same shapes; accumulated, +=). The decoder's
// backward fills all but `embed`, which the caller accumulates from the input-embedding gradient (it knows the
// ids: Phi3VModel::embed_inputs_backward).
struct Phi3LayerGrads {
  Tensor in_ln, qkv_w, o_w, post_ln, gate_up_w, down_w;
};
struct Phi3Grads {
  Tensor embed;
  std::vector<Phi3LayerGrads> layers;
  Tensor norm;

  static Phi3Grads zeros_like(const Phi3Decoder& m);  // F32 on the decoder's device
  void zero();
};

struct Phi3Decoder {
  Phi3VConfig cfg;
  Device device;  // where every tensor of the decoder and of its passes lives
  Tensor embed;  // (V, C) model.embed_tokens
  std::vector<Phi3Layer> layers;
  Tensor norm;   // (C) model.norm

  static Phi3Decoder from_weights(const Phi3VConfig& cfg, const WeightStore& ws, const LoadOptions& o = {});

  // RoPE cos/sin (T, D) for positions 0..T-1 as the reference picks them: su/longrope uses the long
  // factors when T > original_max_position_embeddings (T = max position + 1), else the short ones.
  void rope_tables(int64_t T, Tensor* cos, Tensor* sin) const;

  // x (B, T, C) input embeddings, in place -> final hidden states after model.norm.
  // mask (B, T) F32 on the decoder's device: 1 real token, 0 padding. Positions are 0..T-1 for every row
  // (right padding).
  void forward(Tensor& x, const Tensor& mask, int64_t B, int64_t T) const;
  // The same with LoRA (`lora` null: the frozen model, the teacher); with `acts`, what backward needs is kept.
  // `run` carries the LoRA dropout seed of this pass.
  void forward(Tensor& x, const Tensor& mask, int64_t B, int64_t T, const Phi3DecoderLora* lora, Phi3Acts* acts,
               const LoraRun& run) const;
  // dhidden (B, T, C) at the final hidden states -> LoRA gradients accumulated into the adapters of `lora`.
  // Returns the gradient at the input embeddings (B, T, C) when `need_dinput`, else an empty tensor.
  // `run` must be the forward's. With `grads` (full fine-tuning), every layer weight's and the final norm's
  // gradients are accumulated there too (the LoRA path passes none and computes nothing more).
  Tensor backward(Phi3Acts& acts, const Tensor& dhidden, const Phi3DecoderLora& lora, const LoraRun& run,
                  bool need_dinput, Phi3Grads* grads = nullptr) const;

  // Layer l on x (B*T, C), in place, with the RoPE tables of the pass; fills `acts` when given.
  void layer_forward(int64_t l, Tensor& x, const Tensor& mask, int64_t B, int64_t T, const Tensor& cos,
                     const Tensor& sin, const Phi3DecoderLora* lora, const LoraRun& run, Phi3LayerActs* acts) const;

  // The stages of forward (training) and backward, for a caller that runs the decoder layer by layer (the KD
  // step, bracketing each layer's weights: core/units.h). Forward: begin_acts, layer_forward_kept per
  // layer, final_norm. Backward: backward_begin (through the final norm), layer_backward from the last layer
  // down; dx (B*T, C) is then the gradient at the input embeddings.
  // Fills the pass's RoPE tables and mask; `training` sizes acts.layers for layer_forward_kept (a frozen pass
  // uses only cos/sin/mask with layer_forward).
  void begin_acts(Phi3Acts& acts, const Tensor& mask, int64_t B, int64_t T, bool training) const;
  // Layer l of a training pass: keeps all its activations in acts, or only its input with checkpointing.
  void layer_forward_kept(int64_t l, Tensor& x, Phi3Acts& acts, const Phi3DecoderLora* lora,
                          const LoraRun& run) const;
  // model.norm on x (rows of C), in place; its input kept in acts->x_last when given.
  void final_norm(Tensor& x, Phi3Acts* acts) const;
  // dhidden (B, T, C) -> dx (B*T, C) at the last layer's output.
  Tensor backward_begin(const Phi3Acts& acts, const Tensor& dhidden, const Phi3DecoderLora& lora,
                        Phi3Grads* grads) const;
  // dx at layer l's output -> at its input, in place (layer 0 with neither need_dinput nor grads: only the
  // adapters' gradients, dx is left as it is).
  void layer_backward(int64_t l, Phi3Acts& acts, Tensor& dx, const Phi3DecoderLora& lora, const LoraRun& run,
                      bool need_dinput, Phi3Grads* grads) const;
};

}  // namespace xv
