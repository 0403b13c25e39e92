// The op set, declared once (ggml's pattern). Every op takes views of tensors (core/view.h), checks them
// (shapes, one device for all operands, dtypes) and runs on the backend of that device (kernels/backend.h):
// kernels/cpu for the host, kernels/cuda for a GPU. Model, KD and trainer code calls only these, so the same
// code runs on either backend. The CPU backend is also the reference every other backend is tested against
// (tests/test_backend_ops.cpp).
//
// Conventions. Activations are row-major views (rows, C) with rows = B*T; a view's rows may be `stride`
// elements apart (a column block of a fused buffer). Linear weights use PyTorch's layout W (N, K): y = x W^T + b.
// An optional operand is View{} (absent). Floating operands may be F32, BF16 or F16: the CPU backend widens
// inputs to f32 and computes in f32 (its outputs must be F32), the CUDA backend computes in f32 and stores
// outputs in their own dtype. Index operands are I32, masks F32 (1 keep, 0 drop).
//
// Backward: no autograd; each op has its explicit backward over the same operands. Gradients of inputs are
// OVERWRITTEN (=); gradients of parameters are ACCUMULATED (+=, for accumulation over micro-batches); any
// gradient may be absent (skipped). Reductions run in a fixed order on every backend, so results do not depend
// on the thread count (and a deterministic backend gives the same bits run after run).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "core/view.h"

namespace xv::ops {

// Threads of the CPU backend (OpenMP and OpenBLAS). 0 = the library's default.
void set_num_threads(int n);
int num_threads();

// ---- Memory --------------------------------------------------------------------------------------------
// x = v everywhere.
void fill(const View& x, float v);
// dst = src element by element (same shape), converting the dtype (a cast); any strides.
void copy(const View& src, const View& dst);
// A new tensor of `t` on src's device holding src's values.
Tensor cast(const Tensor& src, DType t);

// ---- GEMM and Linear -------------------------------------------------------------------------------------
// C (M, N) = alpha op(A) op(B) + beta C, op(X) = X or X^T (a view of (K, M) with trans_a gives op(A) (M, K)).
// beta 0 ignores C's old values (NaN included).
void gemm(const View& A, bool trans_a, const View& B, bool trans_b, const View& C, float alpha, float beta);
// y (M, N) = x (M, K) W^T (W (N, K)) + b (N) (b may be absent).
void linear(const View& x, const View& W, const View& b, const View& y);
// dx (M, K) = dy (M, N) W;  dW (N, K) += dy^T x;  db (N) += sum over rows of dy (row blocks of 64 summed in
// block order). dx, dW, db may each be absent (x may then be absent too, when dW is).
void linear_backward(const View& x, const View& W, const View& dy, const View& dx, const View& dW, const View& db);

// ---- Norms -----------------------------------------------------------------------------------------------
// y (rows, C) = (x - mean) / sqrt(var + eps) * g + b (biased variance; b may be absent).
void layernorm(const View& x, const View& g, const View& b, const View& y, float eps);
// Recomputes mean and rstd from x: dx (rows, C) =, dg, db (C) +=.
void layernorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg,
                        const View& db, float eps);
// y (rows, C) = x / sqrt(mean(x^2) + eps) * g.
void rmsnorm(const View& x, const View& g, const View& y, float eps);
void rmsnorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg, float eps);
// Each row scaled to unit L2 norm, in place: x / max(||x||, 1e-12) (rows of zeros stay zero).
void l2_normalize(const View& x);

// ---- Activations -----------------------------------------------------------------------------------------
enum class Act {
  gelu_erf,    // x * 0.5 * (1 + erf(x / sqrt 2))
  gelu_tanh,   // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  quick_gelu,  // x * sigmoid(1.702 x)
  silu,        // x * sigmoid(x)
};
// In place.
void activation(Act a, const View& x);
// dx = dy * f'(x), x the forward's INPUT; dx may be dy itself.
void activation_backward(Act a, const View& x, const View& dy, const View& dx);
// out (rows, I) = silu(gate) * up, gate_up (rows, 2I) = [gate | up] (Phi-3's fused gate_up_proj).
void swiglu(const View& gate_up, const View& out);
// dgate_up (rows, 2I) = from dout (rows, I).
void swiglu_backward(const View& gate_up, const View& dout, const View& dgate_up);

// ---- Elementwise -------------------------------------------------------------------------------------------
// y += x (same shape).
void add(const View& y, const View& x);
// x (rows, C): row r += src row (r mod src.rows): a bias (src of one row) or a position table (src of T rows
// added to a (B*T, C) batch).
void add_rows(const View& x, const View& src);
// x *= alpha.
void scale(const View& x, float alpha);

// ---- Rows: gather, copy, scatter -------------------------------------------------------------------------
// The row tables of embedding lookups, image-token placement, pooling at a position and the crops' HD layout.
// Indices on the host are checked against the tables (an error names the op, the index and its place); indices
// on a device are the caller's to make valid (built from checked host lists).
// out (n, C): row i = a row idx[i] when idx[i] >= 0, else b row -1 - idx[i] (b may be absent when no index
// is negative). idx (n) I32.
void gather_rows(const View& a, const View& b, const View& idx, const View& out);
// dst row idx[i] = src row i (idx distinct; a negative idx[i] skips row i).
void copy_rows(const View& src, const View& idx, const View& dst);
// The adjoint of gather_rows: a row idx[i] += src row i when idx[i] >= 0, else b row -1 - idx[i] += src row i;
// an absent a or b skips its rows. Rows are added in the order of i (deterministic).
void scatter_add_rows(const View& src, const View& idx, const View& a, const View& b);
// im2col for a patch-size-P convolution of stride P without bias (CLIP's patch embedding): pixels
// (N, CH, S, S) as a view of N*CH*S rows of S -> cols (N * (S/P)^2, CH*P*P), in the conv weight's (c, ky, kx)
// order, patches row-major.
void im2col_patches(const View& pixels, int64_t N, int64_t CH, int64_t S, int64_t P, const View& cols);

// ---- Positions -----------------------------------------------------------------------------------------
// cos/sin (T, rot_dim) for positions 0..T-1: inv_freq[i] = 1 / (ext[i] * base^(2i/rot_dim)), angle =
// pos * inv_freq, duplicated across the two halves, times mscale. ext empty: all ones (plain RoPE); Phi-3.5's
// su/longrope passes its short or long factors and attention factor.
void rope_tables(double base, const std::vector<float>& ext, float mscale, const View& cos, const View& sin);
// Rotary embedding in the rotate_half convention (GPT-NeoX / Llama / Phi-3), in place on x (B*T rows):
// heads h = 0..H-1 at column h*D, the first rot_dim dims of each head rotate; cos/sin (T, rot_dim).
void rope(const View& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, const View& cos,
          const View& sin);
// The adjoint, in place on the gradient (rotation by -angle: the exact transpose, mscale included).
void rope_backward(const View& dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, const View& cos,
                   const View& sin);

// ---- Attention -------------------------------------------------------------------------------------------
// Multi-head attention with explicit strides (flash-attention's params): q (B*T, Hq*D), k and v (B*T, Hkv*D),
// o (B*T, Hq*D) as views (column blocks of a fused qkv buffer, say); query head h uses kv head h / (Hq/Hkv)
// (GQA). Softmax in f32. A query row whose keys are all masked yields zeros (never NaN).
struct AttentionParams {
  View q, k, v, o;
  int64_t B = 0, T = 0, Hq = 0, Hkv = 0, D = 0;
  View key_mask;  // (B, T) F32: 1 keeps a key, 0 masks it (padding); absent: all kept
  bool causal = false;
  float scale = 1.0f;  // usually 1/sqrt(D)
  // (B*Hq, T) F32 contiguous, optional: the forward writes each query row's log sum_j exp(s_j) there (-inf for a
  // row with no key), for the backward to reuse.
  View lse;
};
void attention(const AttentionParams& p);
// dout (B*T, Hq*D); dq (B*T, Hq*D), dk, dv (B*T, Hkv*D) (they may be column blocks of one dqkv buffer); dk, dv of
// a kv head sum over its query heads. Overwritten; any may be absent; fully masked query rows get zero
// gradients. When both fwd.o and fwd.lse are present they must hold the forward's outputs for these inputs: a
// backend may reuse them (the CUDA flash kernels do) instead of recomputing the forward; the CPU recomputes.
// deterministic: the same bits on every run (the CPU always is). false lets the CUDA flash kernels add dq with
// atomics (faster; dq may then differ in its last bits from run to run).
struct AttentionBackwardParams {
  AttentionParams fwd;
  View dout, dq, dk, dv;
  bool deterministic = true;
};
void attention_backward(const AttentionBackwardParams& p);

// ---- Pooling ---------------------------------------------------------------------------------------------
// out (B, C) = mean of x's rows (B*T, C) where mask (B, T) is non-zero, weighted by the mask, over positions in
// order; the count clamped at 1e-9 (sentence-transformers' mean pooling; the image-prefix pooling).
void masked_mean_rows(const View& x, const View& mask, int64_t B, int64_t T, const View& out);
// dx (B*T, C) = its adjoint from dout (B, C) (zero rows where the mask is 0).
void masked_mean_rows_backward(const View& dout, const View& mask, int64_t B, int64_t T, const View& dx);

// ---- LoRA dropout ------------------------------------------------------------------------------------------
// out = keep(i) ? x / (1 - p) : 0 over the n = rows*cols elements of contiguous x, where keep(i) is a pure
// function of (seed, i) (a splitmix64 hash against p): the same mask on every backend and thread count,
// recomputed rather than stored for backward.
void dropout(const View& x, uint64_t seed, float p, const View& out);
// dx += keep(i) ? din / (1 - p) : 0 (the same mask).
void dropout_backward_add(const View& din, uint64_t seed, float p, const View& dx);

// ---- LoRA: the low-rank path, fused ---------------------------------------------------------------------
// y (M, N) += scaling * drop(x) A^T B^T for x (M, K), A (r, K), B (N, r); xa (M, r) = drop(x) A^T, kept for the
// backward. drop is `dropout` above with (seed, p) over x's M*K elements in row-major order (x contiguous then);
// seed 0 or p 0: no dropout. y may be a column block of a wider buffer (one of a fused q/k/v, say). The mask is
// recomputed from the seed, never stored; the CPU composes dropout and two GEMMs, the CUDA backend reads x
// once in one kernel (the down projection with its mask) and adds the up projection through cuBLASLt.
void lora_forward(const View& x, const View& A, const View& B, float scaling, uint64_t seed, float p, const View& y,
                  const View& xa);
// From dy (M, N) and the forward's xa: dB (N, r) += scaling dy^T xa; dxa = scaling dy B; dA (r, K) += dxa^T drop(x);
// dx (M, K) += the gradient through the same mask, ACCUMULATED (it holds the base layer's gradient already). dx
// may be absent (dA and dB are always given).
void lora_backward(const View& x, const View& A, const View& B, const View& xa, float scaling, uint64_t seed,
                   float p, const View& dy, const View& dx, const View& dA, const View& dB);

// ---- The distillation loss, fused --------------------------------------------------------------------------
// The self-KD loss's two MSE terms in one pass: en = mean((s_en - t)^2), xx = mean((s_xx - t)^2) over t's
// elements (f64, blocks of 4096 summed in block order: the bits of two mse_loss calls on the CPU), and their
// gradients ds_en += weight * 2 (s_en - t) / n, ds_xx likewise (either may be absent). s_en, s_xx, t (B, C).
struct DistillTerms {
  double en = 0.0, xx = 0.0;
};
DistillTerms distill_loss(const View& s_en, const View& s_xx, const View& t, float weight, const View& ds_en,
                          const View& ds_xx);
// Where a side's embeddings come from when they are pooled from hidden rows h (B*T, C): the row idx[b] (I32,
// B entries: last-token pooling) or, when idx is absent, the mean over mask (B, T) (masked_mean_rows).
struct DistillPool {
  View idx, mask;
  int64_t B = 0, T = 0;
};
// distill_loss on pooled hidden rows: the gradients land in the hidden rows' dh_en, dh_xx (B*T, C), ACCUMULATED
// (either may be absent), as pooling, the loss and pooling's backward in sequence would give them.
DistillTerms distill_loss_pooled(const View& h_en, const DistillPool& pool_en, const View& h_xx,
                                 const DistillPool& pool_xx, const View& t, float weight, const View& dh_en,
                                 const View& dh_xx);

// ---- Losses and the optimizer ----------------------------------------------------------------------------
// Returns weight * mean((s - t)^2) over s's elements, accumulated in f64 in blocks of 4096 summed in block
// order; ds += weight * 2 (s - t) / n (ds may be absent).
double mse_loss(const View& s, const View& t, const View& ds, float weight);

struct AdamWParams {
  float lr = 1e-5f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
};
// torch.optim.AdamW's update (single-tensor path, f32) of update number t >= 1 on p, with gradient g and
// moments m, v (all F32, same shape): p *= 1 - lr wd; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), the bias corrections in f64.
void adamw_update(const View& p, const View& g, const View& m, const View& v, float lr, int64_t t,
                  const AdamWParams& cfg);
// Many tensors' updates in one pass (the CUDA backend: one launch over a table of segments), each segment's
// gradient multiplied by `clip` first (the global-norm clipping coefficient; 1 leaves it as is): the bits of
// scale(g, clip) then adamw_update per segment, with g left untouched. g of every segment F32.
struct AdamWSegment {
  View p, g, m, v;
};
void adamw_update_multi(const std::vector<AdamWSegment>& segs, float clip, float lr, int64_t t,
                        const AdamWParams& cfg);
// Sums of squares (f64) of x's elements in chunks of `chunk` (the last one may be short), each chunk summed in
// order: the gradient-norm pieces that stay the same at every world size.
std::vector<double> sum_squares_chunks(const View& x, int64_t chunk);

}  // namespace xv::ops
