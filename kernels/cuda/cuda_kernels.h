// The launch interface of the CUDA kernels: what cuda_backend.cpp (host code, g++) calls once it has checked
// an op's operands, and what the .cu files (nvcc) implement. Plain types only: nvcc cannot parse core/view.h
// (it pulls in fmt), so operands cross this line as DMat, a View without its checks.
//
// Every launcher runs on ctx.stream, asynchronously, with the device already set by the caller; launchers that
// need temporary memory take it stream-ordered (Scratch). Dtypes: every floating operand may be F32, BF16 or
// F16 (the caller has refused anything else); kernels compute in f32 and store in the operand's own dtype.
// Where a launcher needs one dtype for a group of operands it says so, and the caller packs the others (see
// cuda_backend.cpp: unify_inputs).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "kernels/cuda/cuda_check.h"

namespace xv::cuda {

// rows x cols elements of dt at p, row-major, rows `stride` elements apart. present = false: an absent
// optional operand. The caller sets stride = cols for a view of at most one row (a View's stride is
// arbitrary there), so `stride == cols` means contiguous.
struct DMat {
  void* p = nullptr;
  DType dt = DType::F32;
  int64_t rows = 0, cols = 0, stride = 0;
  bool present = false;

  int64_t numel() const { return rows * cols; }
  bool contiguous() const { return rows <= 1 || stride == cols; }
};

// Where an op runs.
struct Ctx {
  cudaStream_t stream = nullptr;
  int max_smem_optin = 48 * 1024;  // dynamic shared memory a block may opt in to (cudaDevAttr...Optin)
  bool memory_pools = true;        // stream-ordered allocation (cudaMallocAsync) is supported
};

// Temporary device memory of one op: stream-ordered allocations freed (stream-ordered) when it goes out of
// scope, so it may be released while the op's kernels are still queued. Without memory pools it falls back
// to cudaMalloc / cudaFree (cudaFree waits for the device).
class Scratch {
 public:
  explicit Scratch(const Ctx& c) : ctx_(c) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    for (void* p : ptrs_) {
      if (ctx_.memory_pools) (void)cudaFreeAsync(p, ctx_.stream);
      else (void)cudaFree(p);
    }
  }
  template <class T>
  T* alloc(int64_t n) {
    const size_t bytes = size_t(std::max<int64_t>(n, 1)) * sizeof(T);
    void* p = nullptr;
    if (ctx_.memory_pools) XV_CUDA_CHECK(cudaMallocAsync(&p, bytes, ctx_.stream));
    else XV_CUDA_CHECK(cudaMalloc(&p, bytes));
    ptrs_.push_back(p);
    return static_cast<T*>(p);
  }
  // A contiguous rows x cols matrix of dtype dt.
  DMat matrix(DType dt, int64_t rows, int64_t cols) {
    DMat m;
    m.p = alloc<char>(rows * cols * int64_t(dtype_size(dt)));
    m.dt = dt, m.rows = rows, m.cols = cols, m.stride = cols, m.present = true;
    return m;
  }

 private:
  Ctx ctx_;
  std::vector<void*> ptrs_;
};

enum class ActKind : int { gelu_erf = 0, gelu_tanh = 1, quick_gelu = 2, silu = 3 };

// ---- elementwise.cu --------------------------------------------------------------------------------------
// x = v. Any dtype when v == 0 (all-zero bytes, as the cpu's memset, -0 included); F32, BF16, F16 otherwise.
void fill(const Ctx& c, const DMat& x, float v);
// dst = src (same shape): a byte copy when the dtypes agree (any dtype), else a floating cast with
// core/dtype.h's rounding (nearest even, NaN stays NaN).
void copy(const Ctx& c, const DMat& src, const DMat& dst);
void add(const Ctx& c, const DMat& y, const DMat& x);         // y += x
void add_rows(const Ctx& c, const DMat& x, const DMat& src);  // x row r += src row (r mod src.rows)
void scale(const Ctx& c, const DMat& x, float alpha);         // x *= alpha
// out (rows, C): every row = vec, a vector of C elements (any layout of C elements).
void broadcast_rows(const Ctx& c, const DMat& vec, const DMat& out);
void activation(const Ctx& c, ActKind a, const DMat& x);  // contiguous, in place
// x and dy of one dtype; dx may be dy itself. Contiguous.
void activation_backward(const Ctx& c, ActKind a, const DMat& x, const DMat& dy, const DMat& dx);
void swiglu(const Ctx& c, const DMat& gate_up, const DMat& out);
// gate_up and dout of one dtype. Contiguous.
void swiglu_backward(const Ctx& c, const DMat& gate_up, const DMat& dout, const DMat& dgate_up);
// Contiguous; scale = 1 / (1 - p) computed by the caller as the cpu does.
void dropout(const Ctx& c, const DMat& x, uint64_t seed, float p, float scale, const DMat& out);
void dropout_backward_add(const Ctx& c, const DMat& din, uint64_t seed, float p, float scale, const DMat& dx);

// ---- norms.cu --------------------------------------------------------------------------------------------
// g and b (b may be absent) of one dtype.
void layernorm(const Ctx& c, const DMat& x, const DMat& g, const DMat& b, const DMat& y, float eps);
void rmsnorm(const Ctx& c, const DMat& x, const DMat& g, const DMat& y, float eps);
// x and dy of one dtype; dx, dg, db may be absent (db ignored when rms).
void norm_backward(const Ctx& c, bool rms, const DMat& x, const DMat& g, const DMat& dy, const DMat& dx,
                   const DMat& dg, const DMat& db, float eps);
void l2_normalize(const Ctx& c, const DMat& x);  // contiguous
// out (N elements) += sum over the rows of m (rows, N), in row blocks of 64 summed in block order: the bias
// gradient of linear_backward.
void row_sums_add(const Ctx& c, const DMat& m, const DMat& out);

// ---- rows.cu ---------------------------------------------------------------------------------------------
// a and b (b may be absent) of one dtype.
void gather_rows(const Ctx& c, const DMat& a, const DMat& b, const DMat& idx, const DMat& out);
void copy_rows(const Ctx& c, const DMat& src, const DMat& idx, const DMat& dst);
void im2col_patches(const Ctx& c, const DMat& pixels, int64_t N, int64_t CH, int64_t S, int64_t P,
                    const DMat& cols);
// In place on x; cos and sin of one dtype. backward: the transpose (rope_backward).
void rope(const Ctx& c, const DMat& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim,
          const DMat& cos, const DMat& sin, bool backward);
void masked_mean_rows(const Ctx& c, const DMat& x, const DMat& mask, int64_t B, int64_t T, const DMat& out);
void masked_mean_rows_backward(const Ctx& c, const DMat& dout, const DMat& mask, int64_t B, int64_t T,
                               const DMat& dx);

// ---- scatter.cu ------------------------------------------------------------------------------------------
// a, b: either may be absent (not both).
void scatter_add_rows(const Ctx& c, const DMat& src, const DMat& idx, const DMat& a, const DMat& b);

// ---- attention.cu ----------------------------------------------------------------------------------------
struct Attn {
  DMat q, k, v, o;                 // q, k, v of one dtype
  int64_t B = 0, T = 0, Hq = 0, Hkv = 0, D = 0;
  const float* key_mask = nullptr;  // (B*T) contiguous F32, or null
  bool causal = false;
  float scale = 1.0f;
  float* lse = nullptr;        // (B*Hq*T) F32: written by the forward when set; with o, reused by the backward
  bool deterministic = true;   // backward: false lets the flash kernels add dq with atomics
};
// The flash kernels (flash_attention.cu) when flash_attention_takes(a) (q/k/v BF16, D 32, 64, 96 or 128),
// else the simple ones. q, k, v, dout of one dtype; dk and dv of one dtype; any of dq, dk, dv may be absent.
void attention(const Ctx& c, const Attn& a);
void attention_backward(const Ctx& c, const Attn& a, const DMat& dout, const DMat& dq, const DMat& dk,
                        const DMat& dv);
bool flash_attention_takes(const Attn& a);
void flash_attention(const Ctx& c, const Attn& a);
void flash_attention_backward(const Ctx& c, const Attn& a, const DMat& dout, const DMat& dq, const DMat& dk,
                              const DMat& dv);

// ---- lora.cu ---------------------------------------------------------------------------------------------
// xa (M, r) = drop(x) A^T (drop: the dropout of (seed, p) over x's elements in row-major order, x / (1 - p)
// kept as scale = 1 / (1 - p); drop false: x itself).
void lora_down(const Ctx& c, const DMat& x, const DMat& A, const DMat& xa, uint64_t seed, float p, float scale,
               bool drop);
// dA (r, K) += dxa^T drop(x), rows in order.
void lora_da(const Ctx& c, const DMat& x, const DMat& dxa, const DMat& dA, uint64_t seed, float p, float scale);
// dx (M, K) += keep ? scale (dxa A) : 0.
void lora_dx(const Ctx& c, const DMat& dxa, const DMat& A, const DMat& dx, uint64_t seed, float p, float scale);

// ---- distill_loss.cu ------------------------------------------------------------------------------------
// part (host, 2 per block of 4096 elements) = the f64 sums of (s_en - t)^2 and (s_xx - t)^2 per block;
// ds_en += gscale (s_en - t), ds_xx likewise (either absent). s_en, s_xx, t of one dtype; ds_en and ds_xx of one
// dtype; all contiguous.
void distill_loss(const Ctx& c, const DMat& s_en, const DMat& s_xx, const DMat& t, const DMat& ds_en,
                  const DMat& ds_xx, float gscale, std::vector<double>& part);

// ---- optimizer.cu ----------------------------------------------------------------------------------------
// part[blk] (host, ceil(n / 4096) entries) = sum over block blk of (s - t)^2 in f64; ds += gscale (s - t).
// s and t of one dtype; contiguous.
void mse_loss(const Ctx& c, const DMat& s, const DMat& t, const DMat& ds, float gscale, std::vector<double>& part);
struct AdamWStep {
  float b1 = 0, b2 = 0, eps = 0, step_size = 0, bc2_sqrt = 0, decay = 0;
};
void adamw_update(const Ctx& c, const DMat& p, const DMat& g, const DMat& m, const DMat& v, const AdamWStep& s);
// One launch over every segment (all F32 contiguous), g multiplied by clip first.
struct AdamWSeg {
  float* p = nullptr;
  const float* g = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  int64_t n = 0;
};
void adamw_update_multi(const Ctx& c, const std::vector<AdamWSeg>& segs, float clip, const AdamWStep& s);
std::vector<double> sum_squares_chunks(const Ctx& c, const DMat& x, int64_t chunk);

}  // namespace xv::cuda
