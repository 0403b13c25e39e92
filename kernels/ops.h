// The op set, declared once (ggml style). kernels/cpu implements it over f32 host buffers; kernels/cuda
// implements the same ops over device buffers. Every fast kernel has this CPU version beside it as the
// reference, and tests compare backends op by op.
//
// Conventions: activations are row-major [rows, C] with rows = B*T; Linear weights use the PyTorch
// layout W (N, K) so that y = x W^T + b. Shapes in comments.
#pragma once
#include <cstdint>

namespace xv::ops {

// Number of threads the CPU ops use (OpenMP and OpenBLAS). 0 = library default.
void set_num_threads(int n);
int num_threads();

// C (M, N) = alpha * op(A) op(B) + beta * C, row-major, through OpenBLAS.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// y (M, N) = x (M, K) @ W^T (W is (N, K)) + b (N) (b may be null).
void linear(const float* x, const float* W, const float* b, float* y, int64_t M, int64_t K, int64_t N);

// y (rows, C) = LayerNorm(x) * g + b, biased variance, eps inside the square root.
void layernorm(const float* x, const float* g, const float* b, float* y, int64_t rows, int64_t C, float eps);
// y (rows, C) = x / sqrt(mean(x^2) + eps) * g.
void rmsnorm(const float* x, const float* g, float* y, int64_t rows, int64_t C, float eps);

// In place over n elements.
void gelu_erf(float* x, int64_t n);    // x * 0.5 * (1 + erf(x / sqrt 2))
void gelu_tanh(float* x, int64_t n);   // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
void quick_gelu(float* x, int64_t n);  // x * sigmoid(1.702 x)
void silu(float* x, int64_t n);        // x * sigmoid(x)

// out (rows, I) = silu(gate) * up where gate_up (rows, 2I) holds [gate | up] (Phi-3's fused gate_up_proj).
void swiglu(const float* gate_up, float* out, int64_t rows, int64_t I);

// y (n) += x (n).
void add_inplace(float* y, const float* x, int64_t n);

// out (n, C) = table[ids[i]] (vocab, C). Ids must be in [0, vocab): the caller validates.
void embedding(const int32_t* ids, const float* table, float* out, int64_t n, int64_t C);

// Rotary embedding in the rotate_half convention (GPT-NeoX / Llama / Phi-3), in place on x:
// x rows are tokens of a (B, T) batch with row stride `row_stride` elements; heads h = 0..H-1 sit at
// offset h*D; only the first `rot_dim` dims of each head rotate. cos/sin are (T, rot_dim).
void rope(float* x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, int64_t row_stride,
          const float* cos, const float* sin);

// cos/sin tables (T, rot_dim) for positions 0..T-1: inv_freq[i] = 1 / (ext[i] * base^(2i/rot_dim)),
// angle = pos * inv_freq, duplicated across the two halves, multiplied by `mscale`. `ext` may be null
// (all ones): plain RoPE. Phi-3.5's su/longrope passes short or long factors and its attention factor.
void rope_tables(int64_t T, int64_t rot_dim, double base, const float* ext, float mscale, float* cos, float* sin);

// Multi-head attention with explicit strides (flash-attention style params).
struct AttentionParams {
  const float* q = nullptr;  // (B, T, Hq, D) rows of q_stride elements; head h at offset h*D
  const float* k = nullptr;  // (B, T, Hkv, D) rows of k_stride elements
  const float* v = nullptr;  // (B, T, Hkv, D) rows of v_stride elements
  float* o = nullptr;        // (B, T, Hq, D) rows of o_stride elements
  int64_t q_stride = 0, k_stride = 0, v_stride = 0, o_stride = 0;
  int64_t B = 0, T = 0, Hq = 0, Hkv = 0, D = 0;
  const float* key_mask = nullptr;  // (B, T): 1 keeps a key, 0 masks it (padding); null: all kept
  bool causal = false;
  float scale = 1.0f;  // usually 1/sqrt(D)
};
// Softmax in f32. A query row whose keys are all masked yields zeros (never NaN).
void attention(const AttentionParams& p);

// Each row (rows, C) scaled to unit L2 norm (rows of zeros stay zero).
void l2_normalize(float* x, int64_t rows, int64_t C);

// ---------------------------------------------------------------------------------------------------------
// Backward. No autograd: each op has its explicit backward over the same buffers (kernels/cpu/
// ops_backward_cpu.cpp). Gradients of inputs are OVERWRITTEN (=); gradients of parameters are ACCUMULATED
// (+=, for gradient accumulation over micro-batches). Any gradient pointer may be null: that gradient is
// skipped. Reductions over rows run in a fixed order, so results do not depend on the thread count.
// ---------------------------------------------------------------------------------------------------------

// y = x W^T + b: dx (M, K) = dy (M, N) W (N, K); dW (N, K) += dy^T x; db (N) += sum_rows dy.
void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db,
                     int64_t M, int64_t K, int64_t N);

// Recompute mean/rstd from x (rows, C). dx (rows, C) =; dg, db (C) +=.
void layernorm_backward(const float* x, const float* g, const float* dy, float* dx, float* dg, float* db,
                        int64_t rows, int64_t C, float eps);
void rmsnorm_backward(const float* x, const float* g, const float* dy, float* dx, float* dg,
                      int64_t rows, int64_t C, float eps);

// Activations over n elements: x is the forward INPUT; dx = dy * f'(x). dx may alias dy.
void gelu_erf_backward(const float* x, const float* dy, float* dx, int64_t n);
void gelu_tanh_backward(const float* x, const float* dy, float* dx, int64_t n);
void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n);
void silu_backward(const float* x, const float* dy, float* dx, int64_t n);

// out (rows, I) = silu(gate) * up over gate_up (rows, 2I) = [gate | up]: dgate_up (rows, 2I) = from dout (rows, I).
void swiglu_backward(const float* gate_up, const float* dout, float* dgate_up, int64_t rows, int64_t I);

// The adjoint of rope() with the same arguments, in place on the gradient dx (rotation by -angle; the exact
// transpose, so it holds for tables scaled by mscale too).
void rope_backward(float* dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, int64_t row_stride,
                   const float* cos, const float* sin);

// Attention backward: recomputes the softmax from q, k (same params as the forward; fwd.o unused).
// dout (B, T, Hq, D) rows of dout_stride; dq (B, T, Hq, D), dk, dv (B, T, Hkv, D) rows of dq_stride/dk_stride/
// dv_stride (they may interleave in one dqkv buffer as q, k, v do). dk, dv of a kv head sum over the Hq/Hkv
// query heads that share it. dq, dk, dv are overwritten. Fully masked query rows get zero gradients.
struct AttentionBackwardParams {
  AttentionParams fwd;
  const float* dout = nullptr;
  int64_t dout_stride = 0;
  float* dq = nullptr;
  float* dk = nullptr;
  float* dv = nullptr;
  int64_t dq_stride = 0, dk_stride = 0, dv_stride = 0;
};
void attention_backward(const AttentionBackwardParams& p);

// dtable (vocab, C) += scatter of dout (n, C) at ids (repeated ids accumulate).
void embedding_backward(const int32_t* ids, const float* dout, float* dtable, int64_t n, int64_t C);

// Returns weight * mean((s - t)^2) over n elements, accumulated in double; ds (n) += weight * 2 (s - t) / n
// (ds may be null).
double mse_loss(const float* s, const float* t, float* ds, int64_t n, float weight);

// torch.optim.AdamW's update (single-tensor path, f32) of n elements, update number t >= 1.
struct AdamWParams {
  float lr = 1e-5f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
};
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, int64_t t,
                  const AdamWParams& cfg);

}  // namespace xv::ops
