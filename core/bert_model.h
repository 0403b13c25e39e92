// BERT encoder (sentence-transformers style, e.g. all-MiniLM-L6-v2): post-LN, GELU, bidirectional
// attention with a key padding mask. Tensor names are Hugging Face's (BertModel without prefix, or
// with "bert." in front).
#pragma once
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/tensor.h"

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

struct BertModel {
  BertConfig cfg;
  Tensor word_emb;   // (V, C)
  Tensor pos_emb;    // (P, C)
  Tensor type_emb;   // (types, C)
  Tensor emb_ln_g, emb_ln_b;  // (C)
  std::vector<BertLayer> layers;

  static BertModel load(const std::string& model_dir);
  static BertModel from_weights(const BertConfig& cfg, const WeightStore& ws);

  // ids (B, T) right-padded, mask (B, T) with 1 for real tokens -> last hidden state (B, T, C).
  Tensor forward(const std::vector<int32_t>& ids, const std::vector<float>& mask, int64_t B, int64_t T) const;
};

// Mean over the positions where mask is 1: hidden (B, T, C), mask (B, T) -> (B, C).
Tensor mean_pool(const Tensor& hidden, const std::vector<float>& mask, int64_t B, int64_t T);

}  // namespace xv
