// Flash attention, forward and backward, on the tensor cores (mma.sync.m16n8k16, bf16 or f16 operands, f32
// accumulators): tiled, the softmax online, no T x T matrix in memory, the log-sum-exp saved for the backward.
// The tile logic (tile ranges, visibility, the online softmax, the backward's recomputation) is
// kernels/cuda/tiles/flash_tiles.h, run block by block on the CPU by tests/test_flash_tiles.cpp; this file
// adds the warp-level layer: shared-memory tiles, MMA fragments and quad shuffles.
//
// Taken for q, k, v of dtype BF16 and head dims 32, 64, 96, 128 (attention.cu's simple kernels take the rest,
// f32 and f16 included; mma16816 has the f16 form for when f16 is wanted). Outputs in any floating dtype. Blocks of 4 warps:
//   forward   (query tile of 64 rows, b * Hq + h): warp w owns rows 16 w .. 16 w + 15, key tiles of 64 in order;
//   dQ        (query tile of 64 rows, b * Hq + h): the same rows, recomputing P and dP per key tile, in order;
//   dK / dV   (key tile of 64 keys, b * Hkv + hk): warp w owns keys 16 w .. 16 w + 15 and loops over the
//             group's query heads and their query tiles of 32 rows in order: a fixed-order reduction.
// Deterministic mode runs dQ as its own kernel; fast mode adds dQ from the dK/dV blocks with f32 atomics
// (one pass less over K and V, run-to-run differences in the last bits of dQ).
// Shared rows are padded by 8 elements (16 bytes), so the 32-bit fragment loads of a warp hit 32 distinct banks.
#include <cmath>

#include "kernels/cuda/cuda_traits.cuh"
#include "kernels/cuda/tiles/flash_tiles.h"

namespace xv::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kPad = 8;
constexpr int kDsLd = flash::kBwdBr + kPad;  // row length of the dS^T tile (fast mode)

// ---- The warp-level layer ----------------------------------------------------------------------------------

template <class E>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<E, bf16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

template <class E>
__device__ __forceinline__ uint16_t bits16(E v) {
  if constexpr (std::is_same_v<E, bf16>) return __bfloat16_as_ushort(v);
  else return __half_as_ushort(v);
}
// Two values rounded to E in one register, lo in the low half (the lower column of a fragment).
template <class E>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  return uint32_t(bits16(from_f32<E>(lo))) | (uint32_t(bits16(from_f32<E>(hi))) << 16);
}
// Two adjacent elements of one shared row (p 4-byte aligned).
template <class E>
__device__ __forceinline__ uint32_t ld_pair(const E* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
// Elements of two shared rows as one register (p0 low).
template <class E>
__device__ __forceinline__ uint32_t ld_rows(const E* p0, const E* p1) {
  return uint32_t(bits16(*p0)) | (uint32_t(bits16(*p1)) << 16);
}

// A operand (16 x 16, row-major) of k-step kk from a shared tile whose row 0 is the warp's first row.
template <class E>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const E* tile, int ld, int kk, int lane) {
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const flash::RC rc = flash::frag_a(lane, r, 0);
    a[r] = ld_pair(tile + rc.row * ld + kk * 16 + rc.col);
  }
}
// B operand (k x n = 16 x 8) whose element (k, n) is tile[n0 + n][k0 + k]: rows of the tile are the n index
// (K for Q K^T): two adjacent elements of one row per register.
template <class E>
__device__ __forceinline__ void load_b_rows_n(uint32_t (&b)[2], const E* tile, int ld, int n0, int k0, int lane) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const flash::RC kn = flash::frag_b(lane, r, 0);
    b[r] = ld_pair(tile + (n0 + kn.col) * ld + k0 + kn.row);
  }
}
// B operand whose element (k, n) is tile[k0 + k][n0 + n]: rows of the tile are the k index (V for P V).
template <class E>
__device__ __forceinline__ void load_b_rows_k(uint32_t (&b)[2], const E* tile, int ld, int k0, int n0, int lane) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const flash::RC kn0 = flash::frag_b(lane, r, 0), kn1 = flash::frag_b(lane, r, 1);
    b[r] = ld_rows(tile + (k0 + kn0.row) * ld + n0 + kn0.col, tile + (k0 + kn1.row) * ld + n0 + kn1.col);
  }
}
// Accumulator tiles 2 kk, 2 kk + 1 of acc as the A operand of k-step kk (rounded to E).
template <class E, int N>
__device__ __forceinline__ void a_from_acc(uint32_t (&a)[4], const float (&acc)[N][4], int kk) {
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const flash::TileIdx e0 = flash::a_from_c(kk, r, 0), e1 = flash::a_from_c(kk, r, 1);
    a[r] = pack2<E>(acc[e0.tile][e0.i], acc[e1.tile][e1.i]);
  }
}

// Max / sum over the 4 lanes of a quad (the lanes that hold one accumulator row).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// rows x D elements of a strided global matrix (rows row0.., columns col0..) into a padded shared tile; rows
// at or past `valid` are zeros.
template <class E, int D>
__device__ __forceinline__ void load_tile(E* s, Mat<const E> g, int64_t row0, int64_t col0, int64_t valid,
                                          int rows) {
  for (int idx = threadIdx.x; idx < rows * D; idx += kThreads) {
    const int r = idx / D, c = idx % D;
    s[r * (D + kPad) + c] = r < valid ? g.row(row0 + r)[col0 + c] : from_f32<E>(0.0f);
  }
}

// An output of any floating dtype, chosen at run time (one switch per store, in the epilogues).
struct OutMat {
  void* p = nullptr;
  int64_t stride = 0;
  DType dt = DType::F32;
  __device__ __forceinline__ void put(int64_t r, int64_t c, float v) const {
    const int64_t i = r * stride + c;
    if (dt == DType::F32) static_cast<float*>(p)[i] = v;
    else if (dt == DType::BF16) st(static_cast<bf16*>(p) + i, v);
    else st(static_cast<f16*>(p) + i, v);
  }
};
OutMat out_mat(const DMat& m) { return OutMat{m.p, m.stride, m.dt}; }

struct Shape {
  int64_t T = 0, Hq = 0, Hkv = 0, group = 1;
  bool causal = false;
  float scale = 1.0f;
  const float* key_mask = nullptr;  // (B, T) or null
};

// ---- Forward --------------------------------------------------------------------------------------------

template <class E, int D>
__global__ void __launch_bounds__(kThreads, 1) flash_fwd_kernel(Mat<const E> q, Mat<const E> k, Mat<const E> v,
                                                             OutMat o, float* lse, Shape sh) {
  constexpr int LD = D + kPad, NK = flash::kBc / 8, ND = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  E* Qs = reinterpret_cast<E*>(smem_raw);
  E* Ks = Qs + flash::kFwdBr * LD;
  E* Vs = Ks + flash::kBc * LD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t T = sh.T, bh = blockIdx.y, b = bh / sh.Hq, h = bh % sh.Hq, hk = h / sh.group;
  const int64_t q0 = int64_t(blockIdx.x) * flash::kFwdBr, wq0 = q0 + warp * 16;
  const float* mrow = sh.key_mask ? sh.key_mask + b * T : nullptr;
  load_tile<E, D>(Qs, q, b * T + q0, h * D, T - q0, flash::kFwdBr);

  float acc[ND][4] = {};
  flash::RowState rs[2] = {flash::row_start(), flash::row_start()};
  const int64_t tiles = flash::key_tiles(q0, flash::kFwdBr, flash::kBc, T, sh.causal);
  for (int64_t jt = 0; jt < tiles; ++jt) {
    const int64_t k0 = jt * flash::kBc;
    __syncthreads();  // the last tile's readers are done (and Qs is written, on the first)
    load_tile<E, D>(Ks, k, b * T + k0, hk * D, T - k0, flash::kBc);
    load_tile<E, D>(Vs, v, b * T + k0, hk * D, T - k0, flash::kBc);
    __syncthreads();
    float s[NK][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      load_a(a, Qs + warp * 16 * LD, LD, kk, lane);
#pragma unroll
      for (int n = 0; n < NK; ++n) {
        uint32_t bb[2];
        load_b_rows_n(bb, Ks, LD, n * 8, kk * 16, lane);
        mma16816<E>(s[n], a, bb);
      }
    }
    float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < NK; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const flash::RC rc = flash::frag_c(lane, c);
        const bool vis = flash::visible(wq0 + rc.row, k0 + n * 8 + rc.col, T, sh.causal, mrow);
        s[n][c] = flash::masked_score(s[n][c], sh.scale, vis);
        tmax[c >> 1] = fmaxf(tmax[c >> 1], s[n][c]);
      }
    float m_new[2], base[2], tsum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      m_new[r] = flash::max_after(rs[r].m, quad_max(tmax[r]));
      base[r] = flash::exp_base(m_new[r]);
    }
#pragma unroll
    for (int n = 0; n < NK; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        s[n][c] = flash::prob(s[n][c], base[c >> 1]);
        tsum[c >> 1] += s[n][c];
      }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      alpha[r] = flash::rescale(rs[r].m, m_new[r]);
      rs[r] = flash::row_after(rs[r], m_new[r], quad_sum(tsum[r]));
    }
#pragma unroll
    for (int n = 0; n < ND; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[n][c] *= alpha[c >> 1];
#pragma unroll
    for (int kk = 0; kk < flash::kBc / 16; ++kk) {
      uint32_t a[4];
      a_from_acc<E>(a, s, kk);
#pragma unroll
      for (int n = 0; n < ND; ++n) {
        uint32_t bb[2];
        load_b_rows_k(bb, Vs, LD, kk * 16, n * 8, lane);
        mma16816<E>(acc[n], a, bb);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = wq0 + flash::frag_c(lane, 2 * r).row;
    if (i >= T) continue;
    const float f = flash::out_scale(rs[r]);
#pragma unroll
    for (int n = 0; n < ND; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) o.put(b * T + i, h * D + n * 8 + flash::frag_c(lane, 2 * r + e).col, acc[n][2 * r + e] * f);
    if (lse && lane % 4 == 0) lse[bh * T + i] = flash::row_lse(rs[r]);
  }
}

// ---- Backward ---------------------------------------------------------------------------------------------

// delta[(b Hq + h) T + i] = sum_d dO[b T + i][h D + d] O[b T + i][h D + d], one warp per row, in f32.
template <class E, class TO>
__global__ void flash_delta_kernel(Mat<const E> dout, Mat<const TO> o, float* delta, int64_t T, int64_t Hq,
                                   int64_t D, int64_t nrows) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < nrows;
       row += int64_t(gridDim.x) * blockDim.x / 32) {
    const int64_t i = row % T, bh = row / T, h = bh % Hq, b = bh / Hq;
    const E* d = dout.row(b * T + i) + h * D;
    const TO* x = o.row(b * T + i) + h * D;
    float acc = 0.0f;
    for (int64_t c = lane; c < D; c += 32) acc = __fmaf_rn(ld(d + c), ld(x + c), acc);
    acc = warp_reduce(acc, SumOp{});
    if (lane == 0) delta[row] = acc;
  }
}

// dQ, deterministic: one block per (query tile, b Hq + h), key tiles in order.
template <class E, int D>
__global__ void __launch_bounds__(kThreads, 1) flash_bwd_dq_kernel(Mat<const E> q, Mat<const E> k, Mat<const E> v,
                                                                Mat<const E> dout, const float* lse,
                                                                const float* delta, OutMat dq, Shape sh) {
  constexpr int LD = D + kPad, NK = flash::kBc / 8, ND = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  E* Qs = reinterpret_cast<E*>(smem_raw);
  E* dOs = Qs + flash::kDqBr * LD;
  E* Ks = dOs + flash::kDqBr * LD;
  E* Vs = Ks + flash::kBc * LD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t T = sh.T, bh = blockIdx.y, b = bh / sh.Hq, h = bh % sh.Hq, hk = h / sh.group;
  const int64_t q0 = int64_t(blockIdx.x) * flash::kDqBr, wq0 = q0 + warp * 16;
  const float* mrow = sh.key_mask ? sh.key_mask + b * T : nullptr;
  load_tile<E, D>(Qs, q, b * T + q0, h * D, T - q0, flash::kDqBr);
  load_tile<E, D>(dOs, dout, b * T + q0, h * D, T - q0, flash::kDqBr);
  float row_lse[2], row_delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = wq0 + flash::frag_c(lane, 2 * r).row;
    row_lse[r] = i < T ? lse[bh * T + i] : -INFINITY;
    row_delta[r] = i < T ? delta[bh * T + i] : 0.0f;
  }
  float acc[ND][4] = {};
  const int64_t tiles = flash::key_tiles(q0, flash::kDqBr, flash::kBc, T, sh.causal);
  for (int64_t jt = 0; jt < tiles; ++jt) {
    const int64_t k0 = jt * flash::kBc;
    __syncthreads();
    load_tile<E, D>(Ks, k, b * T + k0, hk * D, T - k0, flash::kBc);
    load_tile<E, D>(Vs, v, b * T + k0, hk * D, T - k0, flash::kBc);
    __syncthreads();
    float p[NK][4] = {}, dp[NK][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t aq[4], ado[4];
      load_a(aq, Qs + warp * 16 * LD, LD, kk, lane);
      load_a(ado, dOs + warp * 16 * LD, LD, kk, lane);
#pragma unroll
      for (int n = 0; n < NK; ++n) {
        uint32_t bk[2], bv[2];
        load_b_rows_n(bk, Ks, LD, n * 8, kk * 16, lane);
        load_b_rows_n(bv, Vs, LD, n * 8, kk * 16, lane);
        mma16816<E>(p[n], aq, bk);
        mma16816<E>(dp[n], ado, bv);
      }
    }
#pragma unroll
    for (int n = 0; n < NK; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const flash::RC rc = flash::frag_c(lane, c);
        const bool vis = flash::visible(wq0 + rc.row, k0 + n * 8 + rc.col, T, sh.causal, mrow);
        const float pr = flash::prob_from_lse(flash::masked_score(p[n][c], sh.scale, vis), row_lse[c >> 1]);
        p[n][c] = flash::dscore(pr, dp[n][c], row_delta[c >> 1]);  // dS, in place
      }
#pragma unroll
    for (int kk = 0; kk < flash::kBc / 16; ++kk) {
      uint32_t a[4];
      a_from_acc<E>(a, p, kk);
#pragma unroll
      for (int n = 0; n < ND; ++n) {
        uint32_t bb[2];
        load_b_rows_k(bb, Ks, LD, kk * 16, n * 8, lane);
        mma16816<E>(acc[n], a, bb);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = wq0 + flash::frag_c(lane, 2 * r).row;
    if (i >= T) continue;
#pragma unroll
    for (int n = 0; n < ND; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        dq.put(b * T + i, h * D + n * 8 + flash::frag_c(lane, 2 * r + e).col, sh.scale * acc[n][2 * r + e]);
  }
}

// dK, dV: one block per (key tile, b Hkv + hk). kFast: also dQ, added (unscaled) to dq_acc (B*T, Hq*D) f32
// with atomics.
template <class E, int D, bool kFast>
__global__ void __launch_bounds__(kThreads, 1) flash_bwd_dkdv_kernel(Mat<const E> q, Mat<const E> k, Mat<const E> v,
                                                                  Mat<const E> dout, const float* lse,
                                                                  const float* delta, OutMat dk, OutMat dv,
                                                                  float* dq_acc, Shape sh) {
  constexpr int LD = D + kPad, NQ = flash::kBwdBr / 8, ND = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  E* Ks = reinterpret_cast<E*>(smem_raw);
  E* Vs = Ks + flash::kBc * LD;
  E* Qs = Vs + flash::kBc * LD;
  E* dOs = Qs + flash::kBwdBr * LD;
  E* dSs = dOs + flash::kBwdBr * LD;  // (kBc, kDsLd), fast mode only
  float* lse_s = reinterpret_cast<float*>(dSs + (kFast ? flash::kBc * kDsLd : 0));
  float* delta_s = lse_s + flash::kBwdBr;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t T = sh.T, bhk = blockIdx.y, b = bhk / sh.Hkv, hk = bhk % sh.Hkv;
  const int64_t k0 = int64_t(blockIdx.x) * flash::kBc, wk0 = k0 + warp * 16;
  const float* mrow = sh.key_mask ? sh.key_mask + b * T : nullptr;
  load_tile<E, D>(Ks, k, b * T + k0, hk * D, T - k0, flash::kBc);
  load_tile<E, D>(Vs, v, b * T + k0, hk * D, T - k0, flash::kBc);
  float dk_acc[ND][4] = {}, dv_acc[ND][4] = {};
  const int64_t qtiles = flash::ceil_div(T, flash::kBwdBr);
  for (int64_t h = hk * sh.group; h < (hk + 1) * sh.group; ++h) {
    const int64_t bh = b * sh.Hq + h;
    for (int64_t qt = flash::first_query_tile(k0, flash::kBwdBr, sh.causal); qt < qtiles; ++qt) {
      const int64_t i0 = qt * flash::kBwdBr;
      __syncthreads();  // the last step's readers are done (and K, V are written, on the first)
      load_tile<E, D>(Qs, q, b * T + i0, h * D, T - i0, flash::kBwdBr);
      load_tile<E, D>(dOs, dout, b * T + i0, h * D, T - i0, flash::kBwdBr);
      for (int r = threadIdx.x; r < flash::kBwdBr; r += kThreads) {
        lse_s[r] = i0 + r < T ? lse[bh * T + i0 + r] : -INFINITY;
        delta_s[r] = i0 + r < T ? delta[bh * T + i0 + r] : 0.0f;
      }
      __syncthreads();
      // P^T and dP^T (16 keys x 32 queries per warp)
      float pt[NQ][4] = {}, dpt[NQ][4] = {};
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t ak[4], av[4];
        load_a(ak, Ks + warp * 16 * LD, LD, kk, lane);
        load_a(av, Vs + warp * 16 * LD, LD, kk, lane);
#pragma unroll
        for (int n = 0; n < NQ; ++n) {
          uint32_t bq[2], bdo[2];
          load_b_rows_n(bq, Qs, LD, n * 8, kk * 16, lane);
          load_b_rows_n(bdo, dOs, LD, n * 8, kk * 16, lane);
          mma16816<E>(pt[n], ak, bq);
          mma16816<E>(dpt[n], av, bdo);
        }
      }
#pragma unroll
      for (int n = 0; n < NQ; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const flash::RC rc = flash::frag_c(lane, c);  // row: key, col: query
          const int qi = n * 8 + rc.col;
          const bool vis = flash::visible(i0 + qi, wk0 + rc.row, T, sh.causal, mrow);
          pt[n][c] = flash::prob_from_lse(flash::masked_score(pt[n][c], sh.scale, vis), lse_s[qi]);
          dpt[n][c] = flash::dscore(pt[n][c], dpt[n][c], delta_s[qi]);  // dS^T, in place
        }
#pragma unroll
      for (int kk = 0; kk < flash::kBwdBr / 16; ++kk) {
        uint32_t ap[4], ads[4];
        a_from_acc<E>(ap, pt, kk);
        a_from_acc<E>(ads, dpt, kk);
#pragma unroll
        for (int n = 0; n < ND; ++n) {
          uint32_t bdo[2], bq[2];
          load_b_rows_k(bdo, dOs, LD, kk * 16, n * 8, lane);
          load_b_rows_k(bq, Qs, LD, kk * 16, n * 8, lane);
          mma16816<E>(dv_acc[n], ap, bdo);
          mma16816<E>(dk_acc[n], ads, bq);
        }
      }
      if constexpr (kFast) {
        // dS^T to shared memory, then dQ (32 queries x D) += dS K: warp w takes query rows 16 (w % 2) .. and
        // the half (w / 2) of the head dims.
#pragma unroll
        for (int n = 0; n < NQ; ++n)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const flash::RC rc = flash::frag_c(lane, c);
            dSs[(warp * 16 + rc.row) * kDsLd + n * 8 + rc.col] = from_f32<E>(dpt[n][c]);
          }
        __syncthreads();
        constexpr int NH = D / 16;  // 8-wide column tiles in half of D
        const int qr0 = 16 * (warp % 2), d0 = (warp / 2) * (D / 2);
        float dq_part[NH][4] = {};
#pragma unroll
        for (int kk = 0; kk < flash::kBc / 16; ++kk) {
          uint32_t a[4];  // A (query, key) = dS^T[key][query]
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const flash::RC e0 = flash::frag_a(lane, r, 0), e1 = flash::frag_a(lane, r, 1);
            a[r] = ld_rows(dSs + (kk * 16 + e0.col) * kDsLd + qr0 + e0.row,
                           dSs + (kk * 16 + e1.col) * kDsLd + qr0 + e1.row);
          }
#pragma unroll
          for (int n = 0; n < NH; ++n) {
            uint32_t bb[2];
            load_b_rows_k(bb, Ks, LD, kk * 16, d0 + n * 8, lane);
            mma16816<E>(dq_part[n], a, bb);
          }
        }
        const int64_t ld_dq = sh.Hq * D;
#pragma unroll
        for (int n = 0; n < NH; ++n)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const flash::RC rc = flash::frag_c(lane, c);
            const int64_t i = i0 + qr0 + rc.row;
            if (i < T) atomicAdd(dq_acc + (b * T + i) * ld_dq + h * D + d0 + n * 8 + rc.col, dq_part[n][c]);
          }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t j = wk0 + flash::frag_c(lane, 2 * r).row;
    if (j >= T) continue;
#pragma unroll
    for (int n = 0; n < ND; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t col = hk * D + n * 8 + flash::frag_c(lane, 2 * r + e).col;
        if (dk.p) dk.put(b * T + j, col, sh.scale * dk_acc[n][2 * r + e]);
        if (dv.p) dv.put(b * T + j, col, dv_acc[n][2 * r + e]);
      }
  }
}

// dq = scale * acc (fast mode's epilogue).
__global__ void flash_dq_store_kernel(const float* acc, int64_t rows, int64_t cols, float scale, OutMat dq) {
  const int64_t n = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dq.put(i / cols, i % cols, scale * acc[i]);
}

// ---- Launches ------------------------------------------------------------------------------------------------

template <class K>
void allow_smem(K kernel, size_t bytes, const Ctx& c, const char* what) {
  if (bytes > size_t(c.max_smem_optin)) throw_error((std::string("cuda backend: ") + what + ": needs more shared memory than the device has").c_str());
  if (bytes > 48 * 1024)
    XV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <class F>
void with_head_dim(int64_t D, F&& f) {
  switch (D) {
    case 32: f(std::integral_constant<int, 32>{}); return;
    case 64: f(std::integral_constant<int, 64>{}); return;
    case 96: f(std::integral_constant<int, 96>{}); return;
    case 128: f(std::integral_constant<int, 128>{}); return;
    default: throw_error("cuda backend: flash attention: internal error: head dimension not supported");
  }
}
template <class F>
void with_lowp(DType dt, F&& f) {
  if (dt == DType::BF16) f(Tag<bf16>{});
  else throw_error("cuda backend: flash attention: internal error: q/k/v not bf16");
}

Shape shape_of(const Attn& a) {
  Shape s;
  s.T = a.T, s.Hq = a.Hq, s.Hkv = a.Hkv, s.group = a.Hq / a.Hkv, s.causal = a.causal, s.scale = a.scale;
  s.key_mask = a.key_mask;
  return s;
}

dim3 grid2(int64_t tiles, int64_t heads) {
  if (heads > 65535) throw_error("cuda backend: flash attention: more than 65535 batch x heads");
  return dim3(unsigned(tiles), unsigned(heads));
}

void flash_fwd(const Ctx& c, const Attn& a, const DMat& o, float* lse) {
  with_lowp(a.q.dt, [&](auto te) {
    using E = typename decltype(te)::type;
    with_head_dim(a.D, [&](auto dc) {
      constexpr int D = decltype(dc)::value;
      auto kernel = flash_fwd_kernel<E, D>;
      const size_t smem = size_t(flash::kFwdBr + 2 * flash::kBc) * (D + kPad) * sizeof(E);
      allow_smem(kernel, smem, c, "flash attention");
      kernel<<<grid2(flash::ceil_div(a.T, flash::kFwdBr), a.B * a.Hq), kThreads, smem, c.stream>>>(
          mat<const E>(a.q), mat<const E>(a.k), mat<const E>(a.v), out_mat(o), lse, shape_of(a));
    });
  });
  XV_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool flash_attention_takes(const Attn& a) {
  return a.q.dt == DType::BF16 && flash::head_dim_supported(a.D) && a.Hkv > 0 &&
         a.Hq % a.Hkv == 0;
}

void flash_attention(const Ctx& c, const Attn& a) {
  if (a.B * a.Hq * a.T == 0) return;
  flash_fwd(c, a, a.o, a.lse);
}

void flash_attention_backward(const Ctx& c, const Attn& a, const DMat& dout, const DMat& dq, const DMat& dk,
                              const DMat& dv) {
  const int64_t nrows = a.B * a.Hq * a.T;
  if (nrows == 0 || (!dq.present && !dk.present && !dv.present)) return;
  Scratch scratch(c);
  // The forward's output and log-sum-exp: the caller's when it kept them, else recomputed here.
  DMat o = a.o;
  const float* lse = a.lse;
  if (!(a.o.present && a.lse)) {
    o = scratch.matrix(a.q.dt, a.B * a.T, a.Hq * a.D);
    float* l = scratch.alloc<float>(nrows);
    flash_fwd(c, a, o, l);
    lse = l;
  }
  float* delta = scratch.alloc<float>(nrows);
  with_lowp(a.q.dt, [&](auto te) {
    using E = typename decltype(te)::type;
    with_type(o.dt, [&](auto to) {
      using TO = typename decltype(to)::type;
      flash_delta_kernel<E, TO><<<grid_for(nrows * 32, 256), 256, 0, c.stream>>>(
          mat<const E>(dout), mat<const TO>(o), delta, a.T, a.Hq, a.D, nrows);
    });
  });
  XV_CUDA_CHECK_LAUNCH();
  const Shape sh = shape_of(a);
  const bool fast = !a.deterministic && dq.present;
  float* dq_acc = nullptr;
  if (fast) {
    dq_acc = scratch.alloc<float>(a.B * a.T * a.Hq * a.D);
    XV_CUDA_CHECK(cudaMemsetAsync(dq_acc, 0, size_t(a.B * a.T * a.Hq * a.D) * sizeof(float), c.stream));
  }
  with_lowp(a.q.dt, [&](auto te) {
    using E = typename decltype(te)::type;
    with_head_dim(a.D, [&](auto dc) {
      constexpr int D = decltype(dc)::value;
      const OutMat dkm = dk.present ? out_mat(dk) : OutMat{}, dvm = dv.present ? out_mat(dv) : OutMat{};
      if (dk.present || dv.present || fast) {
        const size_t tiles = size_t(2 * flash::kBc + 2 * flash::kBwdBr) * (D + kPad) * sizeof(E);
        const size_t rows = 2 * flash::kBwdBr * sizeof(float);
        const size_t smem_det = tiles + rows, smem_fast = tiles + size_t(flash::kBc) * kDsLd * sizeof(E) + rows;
        const dim3 grid = grid2(flash::ceil_div(a.T, flash::kBc), a.B * a.Hkv);
        if (fast) {
          auto kernel = flash_bwd_dkdv_kernel<E, D, true>;
          allow_smem(kernel, smem_fast, c, "flash attention backward");
          kernel<<<grid, kThreads, smem_fast, c.stream>>>(mat<const E>(a.q), mat<const E>(a.k), mat<const E>(a.v),
                                                          mat<const E>(dout), lse, delta, dkm, dvm, dq_acc, sh);
        } else {
          auto kernel = flash_bwd_dkdv_kernel<E, D, false>;
          allow_smem(kernel, smem_det, c, "flash attention backward");
          kernel<<<grid, kThreads, smem_det, c.stream>>>(mat<const E>(a.q), mat<const E>(a.k), mat<const E>(a.v),
                                                         mat<const E>(dout), lse, delta, dkm, dvm, nullptr, sh);
        }
        XV_CUDA_CHECK_LAUNCH();
      }
      if (dq.present && !fast) {
        auto kernel = flash_bwd_dq_kernel<E, D>;
        const size_t smem = size_t(2 * flash::kDqBr + 2 * flash::kBc) * (D + kPad) * sizeof(E);
        allow_smem(kernel, smem, c, "flash attention backward");
        kernel<<<grid2(flash::ceil_div(a.T, flash::kDqBr), a.B * a.Hq), kThreads, smem, c.stream>>>(
            mat<const E>(a.q), mat<const E>(a.k), mat<const E>(a.v), mat<const E>(dout), lse, delta, out_mat(dq),
            sh);
        XV_CUDA_CHECK_LAUNCH();
      }
    });
  });
  if (fast) {
    const int64_t rows = a.B * a.T, cols = a.Hq * a.D;
    DMat d = dq;
    flash_dq_store_kernel<<<grid_for(rows * cols, 256), 256, 0, c.stream>>>(dq_acc, rows, cols, a.scale,
                                                                            out_mat(d));
    XV_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace xv::cuda
