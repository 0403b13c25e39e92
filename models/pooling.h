// Pooling of hidden states into embeddings, and the adjoints the KD step needs: the mean over the positions
// a mask keeps (sentence-transformers' mean pooling; the image-prefix pooling of phi3_v) and the row at one
// position per sequence (VLM2Vec's last-token pooling; BERT's CLS). On the tensors' device, through ops.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace xv {

// hidden (B*T, C) or (B, T, C), mask (B, T) F32 -> (B, C): the mask-weighted mean (count clamped at 1e-9).
Tensor mean_pool(const Tensor& hidden, const Tensor& mask, int64_t B, int64_t T);
// Its adjoint: dpooled (B, C) -> dhidden (B, T, C) (zero where the mask is 0).
Tensor mean_pool_backward(const Tensor& dpooled, const Tensor& mask, int64_t B, int64_t T);

// The rows of hidden (B*T, C) at position pos[b] of each sequence b: (B, C).
Tensor pool_at(const Tensor& hidden, const std::vector<int64_t>& pos, int64_t T);
// Its adjoint: dhidden (B*T, C) += dpooled (B, C) at those rows.
void pool_at_backward(const Tensor& dpooled, const std::vector<int64_t>& pos, int64_t T, Tensor& dhidden);

// I32 row indices b * T + pos[b] on device d (for gather_rows / scatter_add_rows / copy_rows).
Tensor row_index(const std::vector<int64_t>& pos, int64_t T, Device d);

}  // namespace xv
