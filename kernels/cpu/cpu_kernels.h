// The CPU reference kernels over raw f32 host buffers: what the cpu backend (cpu_backend.cpp) runs once
// kernels/ops.h has checked the operands, and the reference every other backend is tested against.
// OpenMP across rows, OpenBLAS for GEMMs; every reduction in a fixed order (no dependence on the thread
// count). Shapes and contracts are those of kernels/ops.h; `*_stride` arguments are row strides in elements.
#pragma once
#include <cstdint>
#include <vector>

namespace xv::cpu {

void set_num_threads(int n);
int num_threads();

// C (M, N) = alpha op(A) op(B) + beta C, row-major, through OpenBLAS.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// y (M, N) = x (M, K) @ W^T (W is (N, K)) + b (N) (b may be null); rows ldx / ldy apart.
void linear(const float* x, int64_t ldx, const float* W, const float* b, float* y, int64_t ldy, int64_t M, int64_t K,
            int64_t N);
void linear_backward(const float* x, int64_t ldx, const float* W, const float* dy, int64_t ldy, float* dx,
                     int64_t lddx, float* dW, float* db, int64_t M, int64_t K, int64_t N);

// Contiguous rows of C.
void layernorm(const float* x, const float* g, const float* b, float* y, int64_t rows, int64_t C, float eps);
void rmsnorm(const float* x, const float* g, float* y, int64_t rows, int64_t C, float eps);
void layernorm_backward(const float* x, const float* g, const float* dy, float* dx, float* dg, float* db,
                        int64_t rows, int64_t C, float eps);
void rmsnorm_backward(const float* x, const float* g, const float* dy, float* dx, float* dg, int64_t rows, int64_t C,
                      float eps);
void l2_normalize(float* x, int64_t rows, int64_t C);

// In place over n elements; backward: x the forward's input, dx may alias dy.
void gelu_erf(float* x, int64_t n);
void gelu_tanh(float* x, int64_t n);
void quick_gelu(float* x, int64_t n);
void silu(float* x, int64_t n);
void gelu_erf_backward(const float* x, const float* dy, float* dx, int64_t n);
void gelu_tanh_backward(const float* x, const float* dy, float* dx, int64_t n);
void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n);
void silu_backward(const float* x, const float* dy, float* dx, int64_t n);
void swiglu(const float* gate_up, float* out, int64_t rows, int64_t I);
void swiglu_backward(const float* gate_up, const float* dout, float* dgate_up, int64_t rows, int64_t I);

// y (n) += x (n).
void add_inplace(float* y, const float* x, int64_t n);
// x (rows, C; rows x_stride apart): row r += src row (r mod src_rows).
void add_rows(float* x, int64_t x_stride, int64_t rows, int64_t C, const float* src, int64_t src_rows,
              int64_t src_stride);
void scale(float* x, int64_t n, float alpha);

// Rows of C floats; a/b/src/dst rows *_stride apart; idx (n).
void gather_rows(const float* a, int64_t a_stride, const float* b, int64_t b_stride, const int32_t* idx, int64_t n,
                 int64_t C, float* out, int64_t out_stride);
void copy_rows(const float* src, int64_t src_stride, const int32_t* idx, int64_t n, int64_t C, float* dst,
               int64_t dst_stride);
void scatter_add_rows(const float* src, int64_t src_stride, const int32_t* idx, int64_t n, int64_t C, float* a,
                      int64_t a_stride, float* b, int64_t b_stride);
void im2col_patches(const float* pixels, int64_t N, int64_t CH, int64_t S, int64_t P, float* cols);

void rope_tables(int64_t T, int64_t rot_dim, double base, const float* ext, float mscale, float* cos, float* sin);
void rope(float* x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, int64_t row_stride, const float* cos,
          const float* sin);
void rope_backward(float* dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, int64_t row_stride,
                   const float* cos, const float* sin);

struct AttentionArgs {
  const float* q = nullptr;  // (B, T, Hq, D) rows of q_stride elements; head h at offset h*D
  const float* k = nullptr;  // (B, T, Hkv, D) rows of k_stride elements
  const float* v = nullptr;  // (B, T, Hkv, D) rows of v_stride elements
  float* o = nullptr;        // (B, T, Hq, D) rows of o_stride elements
  int64_t q_stride = 0, k_stride = 0, v_stride = 0, o_stride = 0;
  int64_t B = 0, T = 0, Hq = 0, Hkv = 0, D = 0;
  const float* key_mask = nullptr;  // (B, T): 1 keeps a key, 0 masks it; null: all kept
  bool causal = false;
  float scale = 1.0f;
  float* lse = nullptr;  // (B, Hq, T): log sum exp of each query row's scores (-inf: no key), or null
};
void attention(const AttentionArgs& p);
struct AttentionBackwardArgs {
  AttentionArgs fwd;
  const float* dout = nullptr;
  int64_t dout_stride = 0;
  float* dq = nullptr;
  float* dk = nullptr;
  float* dv = nullptr;
  int64_t dq_stride = 0, dk_stride = 0, dv_stride = 0;
};
void attention_backward(const AttentionBackwardArgs& p);

// x (B*T, C) contiguous, mask (B, T) -> out (B, C); and the adjoint.
void masked_mean_rows(const float* x, const float* mask, int64_t B, int64_t T, int64_t C, float* out);
void masked_mean_rows_backward(const float* dout, const float* mask, int64_t B, int64_t T, int64_t C, float* dx);

// The keep decision of element i of a dropout stream (splitmix64 of (seed, i) against p).
bool dropout_keep(uint64_t seed, uint64_t i, float p);
void dropout(const float* x, int64_t n, uint64_t seed, float p, float* out);
void dropout_backward_add(const float* din, int64_t n, uint64_t seed, float p, float* dx);

double mse_loss(const float* s, const float* t, float* ds, int64_t n, float weight);
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, int64_t t, float beta1,
                  float beta2, float eps, float weight_decay);
std::vector<double> sum_squares_chunks(const float* x, int64_t n, int64_t chunk);

}  // namespace xv::cpu
