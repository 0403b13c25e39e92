// scatter_add_rows (the adjoint of gather_rows: embedding and image-token gradients) and its launch.
//
// Determinism without atomics: every source row i gets a destination key (a row of a, or of b after a's rows;
// rows whose table is absent get a key past every real one), a stable radix sort (CUB) orders the (key, i)
// pairs by key with i ascending inside each key, and one block per run of equal keys adds its source rows in
// that order, one thread per column, into a register initialised from the destination and stored once. For F32
// destinations this is the cpu's sequence of roundings (t += src row i, i ascending), bit for bit.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_traits.cuh"

namespace xv::cuda {

namespace {

constexpr int kThreads = 128;
constexpr uint32_t kSkip = 0xffffffffu;  // the key of a row whose destination table is absent

__global__ void scatter_keys_kernel(const int32_t* idx, int64_t n, bool has_a, bool has_b, uint32_t a_rows,
                                    uint32_t* keys, int32_t* rows) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int32_t k = idx[i];
  keys[i] = k >= 0 ? (has_a ? uint32_t(k) : kSkip) : (has_b ? a_rows + uint32_t(-1 - k) : kSkip);
  rows[i] = int32_t(i);
}

// Block p handles the run starting at sorted position p (other blocks return at once).
template <class TS, class TA, class TB>
__global__ void scatter_runs_kernel(const uint32_t* keys, const int32_t* rows, int64_t n, Mat<const TS> src,
                                    Mat<TA> a, Mat<TB> b, uint32_t a_rows, int64_t C) {
  for (int64_t p = blockIdx.x; p < n; p += gridDim.x) {
    const uint32_t key = keys[p];
    if (key == kSkip || (p > 0 && keys[p - 1] == key)) continue;
    int64_t end = p + 1;
    while (end < n && keys[end] == key) ++end;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      if (key < a_rows) {
        TA* t = a.row(key) + c;
        float acc = ld(t);
        for (int64_t q = p; q < end; ++q) acc = __fadd_rn(acc, ld(src.row(rows[q]) + c));
        st(t, acc);
      } else {
        TB* t = b.row(key - a_rows) + c;
        float acc = ld(t);
        for (int64_t q = p; q < end; ++q) acc = __fadd_rn(acc, ld(src.row(rows[q]) + c));
        st(t, acc);
      }
    }
  }
}

}  // namespace

void scatter_add_rows(const Ctx& c, const DMat& src, const DMat& idx, const DMat& a, const DMat& b) {
  const int64_t n = src.rows, C = src.cols;
  if (n == 0 || C == 0 || (!a.present && !b.present)) return;
  const uint64_t a_rows = a.present ? uint64_t(a.rows) : 0, b_rows = b.present ? uint64_t(b.rows) : 0;
  if (n > INT32_MAX || a_rows + b_rows >= kSkip)
    throw_error("cuda backend: scatter_add_rows: more than 2^31 source rows or 2^32 destination rows");
  Scratch scratch(c);
  uint32_t* keys_in = scratch.alloc<uint32_t>(n);
  uint32_t* keys_out = scratch.alloc<uint32_t>(n);
  int32_t* rows_in = scratch.alloc<int32_t>(n);
  int32_t* rows_out = scratch.alloc<int32_t>(n);
  scatter_keys_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, c.stream>>>(static_cast<const int32_t*>(idx.p), n,
                                                                        a.present, b.present, uint32_t(a_rows),
                                                                        keys_in, rows_in);
  XV_CUDA_CHECK_LAUNCH();
  // All 32 key bits: kSkip (all ones) must sort after every real key.
  const int end_bit = 32;
  size_t temp_bytes = 0;
  XV_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, rows_in, rows_out, int(n), 0,
                                                end_bit, c.stream));
  void* temp = scratch.alloc<char>(int64_t(temp_bytes));
  XV_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, rows_in, rows_out, int(n), 0,
                                                end_bit, c.stream));
  const unsigned grid = unsigned(std::min<int64_t>(n, int64_t(1) << 20));
  with_types(src.dt, dt_or_f32(a), dt_or_f32(b), [&](auto ts, auto ta, auto tb) {
    using TS = typename decltype(ts)::type;
    using TA = typename decltype(ta)::type;
    using TB = typename decltype(tb)::type;
    scatter_runs_kernel<TS, TA, TB><<<grid, kThreads, 0, c.stream>>>(
        keys_out, rows_out, n, mat<const TS>(src), a.present ? mat<TA>(a) : Mat<TA>{},
        b.present ? mat<TB>(b) : Mat<TB>{}, uint32_t(a_rows), C);
  });
  XV_CUDA_CHECK_LAUNCH();
}

}  // namespace xv::cuda
