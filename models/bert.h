// BERT encoder (sentence-transformers style, e.g. all-MiniLM-L6-v2): post-LN, GELU, bidirectional
// attention with a key padding mask. Tensor names are Hugging Face's (BertModel without prefix, or
// with "bert." in front).
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

struct BertLayer {
  Tensor qkv_w;   // (3C, C): query, key, value stacked (fused at load for one GEMM)
  Tensor qkv_b;   // (3C)
  Tensor ao_w;    // (C, C) attention.output.dense
  Tensor ao_b;    // (C)
  Tensor ln1_g, ln1_b;  // (C) attention.output.LayerNorm
  Tensor i_w;     // (I, C) intermediate.dense
  Tensor i_b;     // (I)
  Tensor o_w;     // (C, I) output.dense
  Tensor o_b;     // (C)
  Tensor ln2_g, ln2_b;  // (C) output.LayerNorm
};

// The Linear layers of a BERT layer that LoRA can adapt, with their module names (PEFT matches by name).
enum BertSlot { kQuery, kKey, kValue, kAttnOut, kInter, kOut, kBertSlots };
const char* bert_slot_module(int slot);  // "attention.self.query", ..., "output.dense"

struct BertModel;

// The LoRA adapters of a BERT student. slot[l][s] indexes `adapters`, or -1 where the layer is not adapted.
struct BertLora {
  std::vector<LoraAdapter> adapters;
  std::vector<std::array<int, kBertSlots>> slot;

  static BertLora create(const BertModel& m, const LoraConfig& cfg, uint64_t seed);  // on the model's device
  // nullptr where the layer is not adapted (or there are no adapters at all: an empty BertLora).
  const LoraAdapter* at(int64_t layer, int s) const {
    if (size_t(layer) >= slot.size()) return nullptr;
    const int i = slot[size_t(layer)][size_t(s)];
    return i < 0 ? nullptr : &adapters[size_t(i)];
  }
  LoraAdapter* at(int64_t layer, int s) {
    if (size_t(layer) >= slot.size()) return nullptr;
    const int i = slot[size_t(layer)][size_t(s)];
    return i < 0 ? nullptr : &adapters[size_t(i)];
  }
  void zero_grad();
};

// What backward needs from a forward pass, per layer (N = B*T rows).
struct BertLayerActs {
  Tensor x_in;       // (N, C) layer input
  Tensor qkv;        // (N, 3C) projections, LoRA included
  Tensor att;        // (N, C) attention output, before attention.output.dense
  Tensor h1;         // (N, C) attention.output.dense + x_in, the LayerNorm 1 input
  Tensor x1;         // (N, C) LayerNorm 1 output
  Tensor inter_pre;  // (N, I) intermediate.dense output, the GELU input
  Tensor inter;      // (N, I) GELU output
  Tensor h2;         // (N, C) output.dense + x1, the LayerNorm 2 input
  std::array<Tensor, kBertSlots> xa;  // (N, r) per adapted slot: dropout(x) A^T
};
struct BertActs {
  bool checkpointing = false;  // set before forward: keep only each layer's input, recompute in backward
  int64_t B = 0, T = 0;
  Tensor ids;   // (B*T) I32: the embeddings' backward (full fine-tuning) recomputes from them
  Tensor mask;  // (B, T) F32
  std::vector<BertLayerActs> layers;
};

// Full fine-tuning: one gradient per weight of BertModel (same shapes; accumulated, +=).
struct BertLayerGrads {
  Tensor qkv_w, qkv_b, ao_w, ao_b, ln1_g, ln1_b, i_w, i_b, o_w, o_b, ln2_g, ln2_b;
};
struct BertGrads {
  Tensor word_emb, pos_emb, type_emb, emb_ln_g, emb_ln_b;
  std::vector<BertLayerGrads> layers;

  static BertGrads zeros_like(const BertModel& m);  // F32 on the model's device
  void zero();
};

struct BertModel {
  BertConfig cfg;
  Device device;     // where every tensor of the model and of its passes lives
  Tensor word_emb;   // (V, C)
  Tensor pos_emb;    // (P, C)
  Tensor type_emb;   // (types, C)
  Tensor emb_ln_g, emb_ln_b;  // (C)
  std::vector<BertLayer> layers;

  static BertModel load(const std::string& model_dir, const LoadOptions& o = {});
  static BertModel from_weights(const BertConfig& cfg, const WeightStore& ws, const LoadOptions& o = {});

  // Inference: ids (B, T) right-padded, mask (B, T) with 1 for real tokens -> last hidden state (B, T, C).
  // With `lora`, the adapters are applied (the student); without, the frozen model (the teacher).
  Tensor forward(const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B, int64_t T,
                 const BertLora* lora = nullptr) const;

  // Training, a layer at a time (the KD step interleaves passes per layer: models/kd/bert_kd.cpp):
  //   begin_acts, embed, layer_forward_kept for l = 0..L-1, then layer_backward for l = L-1..0 and, with full
  //   gradients, embeddings_backward. `run` carries the LoRA dropout seed of the pass and must be the same in
  //   forward and backward. With `grads` (full fine-tuning) the gradients of every base weight accumulate
  //   there too; without, only the adapters' (the LoRA path). An empty BertLora (no slots) means no adapters.
  void begin_acts(BertActs& acts, const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B,
                  int64_t T) const;
  // Layer l on x (B*T, C) in place, keeping in `acts` what backward needs (only the input with checkpointing).
  void layer_forward_kept(int64_t l, Tensor& x, BertActs& acts, const BertLora* lora, const LoraRun& run) const;

  // The ids (B*T) as an I32 tensor on the model's device, each checked against the vocabulary; and the mask.
  Tensor input_ids(const std::vector<int32_t>& ids, int64_t B, int64_t T) const;
  Tensor input_mask(const std::vector<float>& mask, int64_t B, int64_t T) const;
  // Embeddings + LayerNorm: (B*T, C), from input_ids.
  Tensor embed(const Tensor& ids, int64_t B, int64_t T) const;
  // The LayerNorm input: word + token type 0 + position, (B*T, C).
  Tensor embed_sum(const Tensor& ids, int64_t B, int64_t T) const;
  // Layer l's part of backward: dx (N, C), the gradient at its output, becomes the gradient at its input
  // (left as it was below layer 0 without `grads`: nothing there needs it). Gradients accumulate (+=).
  void layer_backward(int64_t l, BertActs& acts, Tensor& dx, BertLora& lora, const LoraRun& run,
                      BertGrads* grads) const;
  // dx (N, C) at the embedding LayerNorm's output -> the embeddings' gradients (full fine-tuning).
  void embeddings_backward(const BertActs& acts, const Tensor& dx, BertGrads& grads) const;
  // Layer l on x (B*T, C), in place, with the mask (B, T) of the pass; fills `acts` when given.
  void layer_forward(int64_t l, Tensor& x, const Tensor& mask, int64_t B, int64_t T, const BertLora* lora,
                     const LoraRun& run, BertLayerActs* acts) const;
};

}  // namespace xv
