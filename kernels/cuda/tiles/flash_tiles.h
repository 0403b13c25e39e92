// The tile logic of flash attention (kernels/cuda/flash_attention.cu), written once as __host__ __device__
// functions: the kernels call them per thread, and tests/test_flash_tiles.cpp runs the same functions block by
// block on the CPU against the reference op (odd sizes, every mask, GQA, causal). What is left to a GPU to
// check is the warp-level layer only: the MMA fragments, the shuffles and the loads into shared memory.
//
// Forward (one block per (query tile of kFwdBr rows, b, query head)): key tiles of kBc keys in order, scores
// s = scale q.k (-inf where the key is hidden), the online softmax per query row (running max m and sum l; the
// accumulator rescaled by exp(m_old - m_new) when the max grows), O = acc / l, and the log-sum-exp
// lse = m + log l saved for the backward. A row that sees no key has l = 0: its output is zeros, its lse -inf.
//
// Backward, from lse and delta = rowsum(dO * O):
//   p = exp(s - lse) (0 for a hidden key or a row with no key), dp = dO.v, ds = p (dp - delta);
//   dV_j = sum_i p_ij dO_i, dK_j = scale sum_i ds_ij q_i (one block per (key tile, b, kv head): the query heads
//   of its group and their query tiles in order, so dK/dV are summed in a fixed order), and
//   dQ_i = scale sum_j ds_ij k_j (deterministic: one block per (query tile, b, query head), key tiles in order;
//   fast: added atomically by the key blocks).
//
// The MMA fragment layouts of mma.sync.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16", 16-bit
// operands, f32 accumulators) are here too, as coordinate functions of (lane, register, element), so that the
// register reuse the kernels rely on (an accumulator tile becomes an A operand) is checked on the CPU.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/cuda/tiles/tile_fn.h"

namespace xv::flash {

constexpr int kFwdBr = 64;  // query rows of a forward block (4 warps of 16 rows)
constexpr int kBc = 64;     // keys of a key tile (forward, dQ); keys of a dK/dV block (4 warps of 16 keys)
constexpr int kBwdBr = 32;  // query rows of one step of a dK/dV block
constexpr int kDqBr = 64;   // query rows of a dQ block (4 warps of 16 rows)

// Head dimensions the flash kernels are built for (the simple kernels take the others).
XV_TILE_FN bool head_dim_supported(int64_t D) { return D == 32 || D == 64 || D == 96 || D == 128; }

XV_TILE_FN int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Key tiles of bc keys that the query rows [q0, q0 + br) visit: all of them, or when causal those up to the
// last row's diagonal (min(T, q0 + br) keys).
XV_TILE_FN int64_t key_tiles(int64_t q0, int64_t br, int64_t bc, int64_t T, bool causal) {
  const int64_t keys = causal ? (q0 + br < T ? q0 + br : T) : T;
  return ceil_div(keys, bc);
}

// The first query tile of br rows that sees a key of [k0, ...) when causal (rows i >= k0); 0 otherwise.
XV_TILE_FN int64_t first_query_tile(int64_t k0, int64_t br, bool causal) { return causal ? k0 / br : 0; }

// Whether query row i sees key j: inside the sequence, at or before the diagonal when causal, kept by the key
// mask (mask_row: the batch's T keys, null for none).
XV_TILE_FN bool visible(int64_t i, int64_t j, int64_t T, bool causal, const float* mask_row) {
  return i < T && j < T && (!causal || j <= i) && (!mask_row || mask_row[j] != 0.0f);
}

// A score as the kernels hold it: scale * dot, or -inf when hidden.
XV_TILE_FN float masked_score(float dot, float scale, bool vis) { return vis ? dot * scale : -INFINITY; }

// ---- Online softmax (forward) ----------------------------------------------------------------------------

// One query row's state over the key tiles seen so far.
struct RowState {
  float m;  // the largest score (-inf: no key seen)
  float l;  // sum of exp(s - m)
};
XV_TILE_FN RowState row_start() { return {-INFINITY, 0.0f}; }

// The row's max after a tile whose largest score is tile_max (-inf when the tile shows the row no key).
XV_TILE_FN float max_after(float m, float tile_max) { return m > tile_max ? m : tile_max; }
// What exponents subtract: the max, or 0 while the row has seen no key (keeps -inf - -inf out).
XV_TILE_FN float exp_base(float m) { return m == -INFINITY ? 0.0f : m; }
// exp(s - base), 0 for a hidden key.
XV_TILE_FN float prob(float s, float base) { return expf(s - base); }
// The factor of the old sum and accumulator when the max moves from m_old to m_new (0 before any key: both
// are 0 then).
XV_TILE_FN float rescale(float m_old, float m_new) { return m_old == -INFINITY ? 0.0f : expf(m_old - m_new); }
// The state after a tile: its new max and the sum of its probabilities (exp(s - exp_base(m_new))).
XV_TILE_FN RowState row_after(RowState st, float m_new, float tile_sum) {
  return {m_new, st.l * rescale(st.m, m_new) + tile_sum};
}
// The output's factor: 1 / l, or 0 for a row that saw no key (its output is zeros).
XV_TILE_FN float out_scale(RowState st) { return st.l > 0.0f ? 1.0f / st.l : 0.0f; }
// log sum_j exp(s_j): m + log l, -inf for a row that saw no key.
XV_TILE_FN float row_lse(RowState st) { return st.l > 0.0f ? st.m + logf(st.l) : -INFINITY; }

// ---- Backward ---------------------------------------------------------------------------------------------

// The probability recomputed from the saved lse: exp(s - lse); 0 for a hidden key (s = -inf) and for a row
// that saw no key (lse = -inf).
XV_TILE_FN float prob_from_lse(float s, float lse) { return lse == -INFINITY ? 0.0f : expf(s - lse); }
// The score's gradient: p (dp - delta), delta = rowsum(dO * O) = sum_j p_j dp_j.
XV_TILE_FN float dscore(float p, float dp, float delta) { return p * (dp - delta); }

// ---- mma.sync.m16n8k16 fragments --------------------------------------------------------------------------
// A lane l of a warp is (group g = l / 4, thread t = l % 4). A (16 x 16, row-major) is 4 registers of 2
// elements; B (16 x 8, k x n) 2 registers of 2; C/D (16 x 8, f32) 4 floats. Element e of a register is its low
// (e = 0) or high (e = 1) half.

struct RC {
  int row, col;
};
XV_TILE_FN RC frag_a(int lane, int reg, int e) {
  return {lane / 4 + 8 * (reg & 1), 2 * (lane % 4) + e + 8 * (reg >> 1)};
}
// (k, n)
XV_TILE_FN RC frag_b(int lane, int reg, int e) { return {2 * (lane % 4) + e + 8 * reg, lane / 4}; }
XV_TILE_FN RC frag_c(int lane, int i) { return {lane / 4 + 8 * (i >> 1), 2 * (lane % 4) + (i & 1)}; }

// The accumulator tiles n0 = 2 kk and n0 + 1 (16 x 8 each) of a 16 x N product as the A operand of the 16-wide
// k-step kk of the next product: A register reg, element e is accumulator element (tile 2 kk + (reg >> 1),
// index 2 (reg & 1) + e). The kernels pack P (and dS) this way without leaving registers.
struct TileIdx {
  int tile, i;
};
XV_TILE_FN TileIdx a_from_c(int kk, int reg, int e) { return {2 * kk + (reg >> 1), 2 * (reg & 1) + e}; }

}  // namespace xv::flash
