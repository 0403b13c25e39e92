// Multi-head attention, forward and backward, and their launches: simple, correct kernels (the fast flash
// kernels replace them later; see README.md). f32 arithmetic, softmax as kernels/cpu (masked keys and keys
// above the diagonal get probability 0; a query row whose keys are all masked gives zeros, never NaN).
//
// Forward: one block per (b, h, query row i). The row's scores (T floats) live in shared memory (global
// scratch, one slot per resident block, when T is too long for it); one warp per key computes a dot product,
// the block reduces max and sum, and thread d accumulates output column d over the keys in order.
//
// Backward (recomputes the softmax):
//   1. one block per (b, h, i): p = softmax(s), dp_j = dO_i . v_j, delta = sum_j p_j dp_j,
//      ds_j = p_j (dp_j - delta), dQ_i = scale sum_j ds_j k_j; it stores (max, 1/sum, delta) of the row.
//   2. one block per (b, kv head, key row j): loops over the group's query heads and their rows i (i >= j when
//      causal) in a fixed order, recomputes p_ij and ds_ij from the row's stored statistics, and sums
//      dV_j = sum p_ij dO_i and dK_j = scale sum ds_ij q_i; each warp owns a fixed subset of rows and the warps'
//      partial sums are added in warp order. No atomics: the same inputs give the same bits.
// Both passes compute a score with the same warp_dot (lane l takes d = l, l + 32, ..., fused multiply-adds,
// butterfly reduction), so pass 2's probabilities are exactly pass 1's.
#include <cmath>

#include "kernels/cuda/cuda_traits.cuh"

namespace xv::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxGrid = int64_t(1) << 20;
constexpr int64_t kGlobalScoreBytes = int64_t(256) << 20;  // cap of the global score slots

// sum_d a[d] b[d] over D, the same on every lane of the calling warp.
template <class TA, class TB>
__device__ __forceinline__ float warp_dot(const TA* a, const TB* b, int64_t D) {
  float acc = 0.0f;
  for (int64_t d = threadIdx.x % 32; d < D; d += 32) acc = __fmaf_rn(ld(a + d), ld(b + d), acc);
  return warp_reduce(acc, SumOp{});
}

// s[j] = scale q . k_j for keys j < jend (-inf where the key is masked), by one warp per key.
template <class TI>
__device__ __forceinline__ void row_scores(const float* q_s, Mat<const TI> k, int64_t krow0, int64_t kcol,
                                           const float* mask, int64_t jend, int64_t D, float scale, float* s) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t j = warp; j < jend; j += kWarps) {
    float sc = -INFINITY;
    if (!mask || mask[j] != 0.0f) sc = scale * warp_dot(q_s, k.row(krow0 + j) + kcol, D);
    if (lane == 0) s[j] = sc;
  }
}

// s[j] = exp(s[j] - max) for j < jend; returns the max (-inf: every key masked, s untouched) and sets *inv to
// 1 / sum.
__device__ __forceinline__ float row_softmax_exp(float* s, int64_t jend, float* inv) {
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < jend; j += kThreads) mx = fmaxf(mx, s[j]);
  mx = block_reduce<kThreads>(mx, MaxOp{});
  if (mx == -INFINITY) return mx;
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < jend; j += kThreads) {
    const float e = expf(__fsub_rn(s[j], mx));  // exp(-inf) = 0: masked keys
    s[j] = e;
    sum += e;
  }
  sum = block_reduce<kThreads>(sum, SumOp{});  // its __syncthreads also publishes s
  *inv = 1.0f / sum;
  return mx;
}

// ---- Kernels -------------------------------------------------------------------------------------------

// Rows are (b, h, i) flattened as ((b Hq) + h) T + i. gscores: null (scores in shared memory) or one slot of T
// floats per block.
template <class TI, class TO>
__global__ void attention_fwd_kernel(Mat<const TI> q, Mat<const TI> k, Mat<const TI> v, Mat<TO> o,
                                     const float* key_mask, int64_t T, int64_t Hq, int64_t group, int64_t D,
                                     bool causal, float scale, int64_t nrows, float* gscores, float* lse) {
  extern __shared__ float smem[];
  float* q_s = smem;
  float* s = gscores ? gscores + blockIdx.x * T : smem + D;
  for (int64_t row = blockIdx.x; row < nrows; row += gridDim.x) {
    const int64_t i = row % T, bh = row / T, h = bh % Hq, b = bh / Hq, hk = h / group;
    __syncthreads();  // the previous row's readers of q_s and s are done
    const TI* qr = q.row(b * T + i) + h * D;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) q_s[d] = ld(qr + d);
    __syncthreads();
    const int64_t jend = causal ? i + 1 : T;
    row_scores(q_s, k, b * T, hk * D, key_mask ? key_mask + b * T : nullptr, jend, D, scale, s);
    __syncthreads();
    float inv = 0.0f;
    const float mx = row_softmax_exp(s, jend, &inv);
    TO* orow = o.row(b * T + i) + h * D;
    if (lse && threadIdx.x == 0) lse[row] = mx == -INFINITY ? -INFINITY : mx - logf(inv);
    if (mx == -INFINITY) {
      for (int64_t d = threadIdx.x; d < D; d += kThreads) st(orow + d, 0.0f);
      continue;
    }
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      float acc = 0.0f;
      for (int64_t j = 0; j < jend; ++j) acc += __fmul_rn(s[j], inv) * ld(v.row(b * T + j) + hk * D + d);
      st(orow + d, acc);
    }
  }
}

// Pass 1 of the backward. gscores: null or one slot of 2T floats per block.
template <class TI, class TQ>
__global__ void attention_bwd_rows_kernel(Mat<const TI> q, Mat<const TI> k, Mat<const TI> v, Mat<const TI> dout,
                                          bool has_dq, Mat<TQ> dq, const float* key_mask, int64_t T, int64_t Hq,
                                          int64_t group, int64_t D, bool causal, float scale, int64_t nrows,
                                          float* gscores, float* st_max, float* st_inv, float* st_delta) {
  extern __shared__ float smem[];
  float* q_s = smem;
  float* do_s = smem + D;
  float* p = gscores ? gscores + blockIdx.x * 2 * T : smem + 2 * D;
  float* ds = p + T;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t row = blockIdx.x; row < nrows; row += gridDim.x) {
    const int64_t i = row % T, bh = row / T, h = bh % Hq, b = bh / Hq, hk = h / group;
    const float* mask = key_mask ? key_mask + b * T : nullptr;
    __syncthreads();
    const TI* qr = q.row(b * T + i) + h * D;
    const TI* dor = dout.row(b * T + i) + h * D;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) q_s[d] = ld(qr + d), do_s[d] = ld(dor + d);
    __syncthreads();
    const int64_t jend = causal ? i + 1 : T;
    row_scores(q_s, k, b * T, hk * D, mask, jend, D, scale, p);
    __syncthreads();
    float inv = 0.0f;
    const float mx = row_softmax_exp(p, jend, &inv);
    if (mx == -INFINITY) {  // every key masked: zero gradients
      if (has_dq)
        for (int64_t d = threadIdx.x; d < D; d += kThreads) st(dq.row(b * T + i) + h * D + d, 0.0f);
      if (threadIdx.x == 0) st_max[row] = -INFINITY, st_inv[row] = 0.0f, st_delta[row] = 0.0f;
      continue;
    }
    for (int64_t j = threadIdx.x; j < jend; j += kThreads) p[j] = __fmul_rn(p[j], inv);
    // dp_j = dO . v_j (0 where the key is masked: its p is 0)
    for (int64_t j = warp; j < jend; j += kWarps) {
      float dp = 0.0f;
      if (!mask || mask[j] != 0.0f) dp = warp_dot(do_s, v.row(b * T + j) + hk * D, D);
      if (lane == 0) ds[j] = dp;
    }
    __syncthreads();
    float part = 0.0f;
    for (int64_t j = threadIdx.x; j < jend; j += kThreads) part += p[j] * ds[j];
    const float delta = block_reduce<kThreads>(part, SumOp{});
    for (int64_t j = threadIdx.x; j < jend; j += kThreads) ds[j] = __fmul_rn(p[j], __fsub_rn(ds[j], delta));
    __syncthreads();
    if (has_dq) {
      TQ* dqr = dq.row(b * T + i) + h * D;
      for (int64_t d = threadIdx.x; d < D; d += kThreads) {
        float acc = 0.0f;
        for (int64_t j = 0; j < jend; ++j) acc += ds[j] * ld(k.row(b * T + j) + hk * D + d);
        st(dqr + d, scale * acc);
      }
    }
    if (threadIdx.x == 0) st_max[row] = mx, st_inv[row] = inv, st_delta[row] = delta;
  }
}

// Pass 2: rows are (b, kv head, key j) flattened as ((b Hkv) + hk) T + j.
template <class TI, class TKV>
__global__ void attention_bwd_keys_kernel(Mat<const TI> q, Mat<const TI> k, Mat<const TI> v, Mat<const TI> dout,
                                          bool has_dk, Mat<TKV> dk, bool has_dv, Mat<TKV> dv, const float* key_mask,
                                          int64_t T, int64_t Hq, int64_t Hkv, int64_t group, int64_t D, bool causal,
                                          float scale, int64_t nrows, const float* st_max, const float* st_inv,
                                          const float* st_delta) {
  extern __shared__ float smem[];
  float* k_s = smem;
  float* v_s = smem + D;
  float* acc_k = smem + 2 * D;               // (kWarps, D)
  float* acc_v = acc_k + int64_t(kWarps) * D;  // (kWarps, D)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t row = blockIdx.x; row < nrows; row += gridDim.x) {
    const int64_t j = row % T, bhk = row / T, hk = bhk % Hkv, b = bhk / Hkv;
    __syncthreads();
    const TI* kr = k.row(b * T + j) + hk * D;
    const TI* vr = v.row(b * T + j) + hk * D;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) k_s[d] = ld(kr + d), v_s[d] = ld(vr + d);
    for (int64_t e = threadIdx.x; e < int64_t(kWarps) * D; e += kThreads) acc_k[e] = 0.0f, acc_v[e] = 0.0f;
    __syncthreads();
    const bool masked = key_mask && key_mask[b * T + j] == 0.0f;
    if (!masked) {
      float* ak = acc_k + int64_t(warp) * D;
      float* av = acc_v + int64_t(warp) * D;
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
        for (int64_t i = (causal ? j : 0) + warp; i < T; i += kWarps) {
          const int64_t srow = (b * Hq + h) * T + i;
          const float mx = st_max[srow];
          if (mx == -INFINITY) continue;  // a fully masked query row contributes nothing
          const TI* qr = q.row(b * T + i) + h * D;
          const TI* dor = dout.row(b * T + i) + h * D;
          const float s = scale * warp_dot(qr, k_s, D);
          const float p = __fmul_rn(expf(__fsub_rn(s, mx)), st_inv[srow]);
          if (has_dv)
            for (int64_t d = lane; d < D; d += 32) av[d] += p * ld(dor + d);
          if (has_dk) {
            const float dp = warp_dot(dor, v_s, D);
            const float ds = __fmul_rn(p, __fsub_rn(dp, st_delta[srow]));
            for (int64_t d = lane; d < D; d += 32) ak[d] += ds * ld(qr + d);
          }
        }
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      float sk = 0.0f, sv = 0.0f;
      for (int w = 0; w < kWarps; ++w) sk += acc_k[int64_t(w) * D + d], sv += acc_v[int64_t(w) * D + d];
      if (has_dk) st(dk.row(b * T + j) + hk * D + d, scale * sk);
      if (has_dv) st(dv.row(b * T + j) + hk * D + d, sv);
    }
  }
}

// Shared memory per block, opting in above the default 48 KiB when needed.
template <class K>
void set_smem(K kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    XV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// Where a row's T-long buffers go: shared memory when `nbuf` of them plus `fixed` floats fit, else global slots.
struct RowPlan {
  size_t smem = 0;
  int64_t grid = 0;
  bool global = false;
};
RowPlan plan_rows(const Ctx& c, int64_t nrows, int64_t T, int64_t D, int nbuf, int fixed_per_d) {
  RowPlan r;
  const size_t fixed = size_t(fixed_per_d) * size_t(D) * sizeof(float);
  const size_t with_scores = fixed + size_t(nbuf) * size_t(T) * sizeof(float);
  if (with_scores <= size_t(c.max_smem_optin)) {
    r.smem = with_scores;
    r.grid = std::min(nrows, kMaxGrid);
    return r;
  }
  if (fixed > size_t(c.max_smem_optin)) throw_error("cuda backend: attention: head dimension too large");
  r.global = true;
  r.smem = fixed;
  const int64_t slot = int64_t(nbuf) * T * int64_t(sizeof(float));
  r.grid = std::max<int64_t>(1, std::min({nrows, kMaxGrid, kGlobalScoreBytes / slot}));
  return r;
}

}  // namespace

// ---- Launches ----------------------------------------------------------------------------------------------

void attention(const Ctx& c, const Attn& a) {
  const int64_t nrows = a.B * a.Hq * a.T;
  if (nrows == 0 || a.D == 0) return;
  if (flash_attention_takes(a)) return flash_attention(c, a);
  const RowPlan plan = plan_rows(c, nrows, a.T, a.D, 1, 1);
  Scratch scratch(c);
  float* gscores = plan.global ? scratch.alloc<float>(plan.grid * a.T) : nullptr;
  with_types(a.q.dt, a.o.dt, [&](auto ti, auto to) {
    using TI = typename decltype(ti)::type;
    using TO = typename decltype(to)::type;
    auto kernel = attention_fwd_kernel<TI, TO>;
    set_smem(kernel, plan.smem);
    kernel<<<unsigned(plan.grid), kThreads, plan.smem, c.stream>>>(
        mat<const TI>(a.q), mat<const TI>(a.k), mat<const TI>(a.v), mat<TO>(a.o), a.key_mask, a.T, a.Hq,
        a.Hq / a.Hkv, a.D, a.causal, a.scale, nrows, gscores, a.lse);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void attention_backward(const Ctx& c, const Attn& a, const DMat& dout, const DMat& dq, const DMat& dk,
                        const DMat& dv) {
  const int64_t nrows = a.B * a.Hq * a.T;
  if (nrows == 0 || a.D == 0 || (!dq.present && !dk.present && !dv.present)) return;
  if (flash_attention_takes(a)) return flash_attention_backward(c, a, dout, dq, dk, dv);
  const int64_t group = a.Hq / a.Hkv;
  Scratch scratch(c);
  float* st_max = scratch.alloc<float>(nrows);
  float* st_inv = scratch.alloc<float>(nrows);
  float* st_delta = scratch.alloc<float>(nrows);
  const RowPlan plan = plan_rows(c, nrows, a.T, a.D, 2, 2);
  float* gscores = plan.global ? scratch.alloc<float>(plan.grid * 2 * a.T) : nullptr;
  with_types(a.q.dt, dt_or_f32(dq), [&](auto ti, auto tq) {
    using TI = typename decltype(ti)::type;
    using TQ = typename decltype(tq)::type;
    auto kernel = attention_bwd_rows_kernel<TI, TQ>;
    set_smem(kernel, plan.smem);
    kernel<<<unsigned(plan.grid), kThreads, plan.smem, c.stream>>>(
        mat<const TI>(a.q), mat<const TI>(a.k), mat<const TI>(a.v), mat<const TI>(dout), dq.present,
        dq.present ? mat<TQ>(dq) : Mat<TQ>{}, a.key_mask, a.T, a.Hq, group, a.D, a.causal, a.scale, nrows, gscores,
        st_max, st_inv, st_delta);
  });
  XV_CUDA_CHECK_LAUNCH();
  if (!dk.present && !dv.present) return;
  const int64_t krows = a.B * a.Hkv * a.T;
  const size_t smem = size_t(2 + 2 * kWarps) * size_t(a.D) * sizeof(float);
  if (smem > size_t(c.max_smem_optin)) throw_error("cuda backend: attention_backward: head dimension too large");
  const DMat& kv = dk.present ? dk : dv;
  with_types(a.q.dt, kv.dt, [&](auto ti, auto tkv) {
    using TI = typename decltype(ti)::type;
    using TKV = typename decltype(tkv)::type;
    auto kernel = attention_bwd_keys_kernel<TI, TKV>;
    set_smem(kernel, smem);
    kernel<<<unsigned(std::min(krows, kMaxGrid)), kThreads, smem, c.stream>>>(
        mat<const TI>(a.q), mat<const TI>(a.k), mat<const TI>(a.v), mat<const TI>(dout), dk.present,
        dk.present ? mat<TKV>(dk) : Mat<TKV>{}, dv.present, dv.present ? mat<TKV>(dv) : Mat<TKV>{}, a.key_mask, a.T,
        a.Hq, a.Hkv, group, a.D, a.causal, a.scale, krows, st_max, st_inv, st_delta);
  });
  XV_CUDA_CHECK_LAUNCH();
}

}  // namespace xv::cuda
