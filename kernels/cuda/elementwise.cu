// Elementwise kernels and their launches: fill, copy / cast, add, add_rows, scale, broadcast_rows, the
// activations, SwiGLU and dropout. One thread per element in grid-stride loops over (rows, cols) with the
// operands' row strides; arithmetic in f32 as kernels/cpu, in the same order (no fused multiply-adds where the
// cpu's expression has none: __fmul_rn / __fadd_rn keep nvcc from contracting them).
#include <cmath>

#include "kernels/cuda/cuda_traits.cuh"

namespace xv::cuda {

namespace {

constexpr int kThreads = 256;

// ---- Kernels -------------------------------------------------------------------------------------------

template <class T>
__global__ void fill_kernel(Mat<T> x, int64_t rows, int64_t cols, T v) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    x.row(r)[c] = v;
  }
}

template <class TS, class TD>
__global__ void cast_kernel(Mat<const TS> src, Mat<TD> dst, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    dst.row(r)[c] = cast_elem<TD>(src.row(r)[c]);
  }
}

template <class TY, class TX>
__global__ void add_kernel(Mat<TY> y, Mat<const TX> x, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    TY* py = y.row(r) + c;
    st(py, ld(py) + ld(x.row(r) + c));
  }
}

template <class TX, class TS>
__global__ void add_rows_kernel(Mat<TX> x, Mat<const TS> src, int64_t rows, int64_t cols, int64_t src_rows) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    TX* px = x.row(r) + c;
    st(px, ld(px) + ld(src.row(r % src_rows) + c));
  }
}

template <class T>
__global__ void scale_kernel(Mat<T> x, int64_t rows, int64_t cols, float alpha) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    T* px = x.row(r) + c;
    st(px, ld(px) * alpha);
  }
}

template <class TV, class TO>
__global__ void broadcast_rows_kernel(Vec<const TV> v, Mat<TO> out, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    out.row(r)[c] = cast_elem<TO>(*v.at(c));
  }
}

// The forward functions of ops::Act, as kernels/cpu/ops_cpu.cpp writes them.
__device__ __forceinline__ float act_fwd(ActKind a, float v) {
  switch (a) {
    case ActKind::gelu_erf: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
    case ActKind::gelu_tanh: {
      const float k = 0.79788456080286535588f;  // sqrt(2 / pi)
      return 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
    case ActKind::quick_gelu: return v / (1.0f + expf(-1.702f * v));
    case ActKind::silu: return v / (1.0f + expf(-v));
  }
  return v;
}

// f'(x), as kernels/cpu/ops_backward_cpu.cpp.
__device__ __forceinline__ float act_grad(ActKind a, float v) {
  switch (a) {
    case ActKind::gelu_erf: {
      const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752440f));
      const float pdf = 0.39894228040143267794f * expf(-0.5f * v * v);  // 1 / sqrt(2 pi)
      return cdf + v * pdf;
    }
    case ActKind::gelu_tanh: {
      const float k = 0.79788456080286535588f, c = 0.044715f;
      const float u = k * (v + c * v * v * v);
      const float t = tanhf(u);
      return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * k * (1.0f + 3.0f * c * v * v);
    }
    case ActKind::quick_gelu: {
      const float s = 1.0f / (1.0f + expf(-1.702f * v));
      return s + 1.702f * v * s * (1.0f - s);
    }
    case ActKind::silu: {
      const float s = 1.0f / (1.0f + expf(-v));
      return s * (1.0f + v * (1.0f - s));
    }
  }
  return 1.0f;
}

template <class T>
__global__ void activation_kernel(ActKind a, T* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    st(x + i, act_fwd(a, ld(x + i)));
}

// dx may be dy (same pointer and dtype): each element is read before it is written, by the same thread.
template <class TI, class TD>
__global__ void activation_backward_kernel(ActKind a, const TI* x, const TI* dy, TD* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = ld(dy + i) * act_grad(a, ld(x + i));
    st(dx + i, g);
  }
}

// gate_up (rows, 2I) = [gate | up] -> out (rows, I) = silu(gate) * up.
template <class TG, class TO>
__global__ void swiglu_kernel(const TG* gate_up, TO* out, int64_t rows, int64_t I) {
  const int64_t n = rows * I;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / I, c = i - r * I;
    const float g = ld(gate_up + r * 2 * I + c), u = ld(gate_up + r * 2 * I + I + c);
    st(out + i, u * (g / (1.0f + expf(-g))));
  }
}

// dgate = dout u silu'(g), dup = dout silu(g); dgate_up may be gate_up itself (each element read first).
template <class TI, class TD>
__global__ void swiglu_backward_kernel(const TI* gate_up, const TI* dout, TD* dgate_up, int64_t rows, int64_t I) {
  const int64_t n = rows * I;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / I, c = i - r * I;
    const float g = ld(gate_up + r * 2 * I + c), u = ld(gate_up + r * 2 * I + I + c), d = ld(dout + i);
    const float s = 1.0f / (1.0f + expf(-g));
    st(dgate_up + r * 2 * I + c, d * u * (s * (1.0f + g * (1.0f - s))));
    st(dgate_up + r * 2 * I + I + c, d * (g * s));
  }
}

template <class TX, class TO>
__global__ void dropout_kernel(const TX* x, int64_t n, uint64_t seed, float p, float scale, TO* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    st(out + i, dropout_keep(seed, uint64_t(i), p) ? __fmul_rn(ld(x + i), scale) : 0.0f);
}

template <class TI, class TD>
__global__ void dropout_backward_add_kernel(const TI* din, int64_t n, uint64_t seed, float p, float scale, TD* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (dropout_keep(seed, uint64_t(i), p)) st(dx + i, __fadd_rn(ld(dx + i), __fmul_rn(ld(din + i), scale)));
}

}  // namespace

// ---- Launches ----------------------------------------------------------------------------------------------

void fill(const Ctx& c, const DMat& x, float v) {
  if (x.numel() == 0) return;
  const size_t es = dtype_size(x.dt);
  if (v == 0.0f) {  // -0 too: the cpu writes zero bytes for any zero
    // 1-D when contiguous: a 2-D call's pitch is limited (cudaDevAttrMaxPitch), a tensor's size is not.
    if (x.contiguous()) XV_CUDA_CHECK(cudaMemsetAsync(x.p, 0, size_t(x.numel()) * es, c.stream));
    else XV_CUDA_CHECK(cudaMemset2DAsync(x.p, size_t(x.stride) * es, 0, size_t(x.cols) * es, size_t(x.rows), c.stream));
    return;
  }
  if (x.dt != DType::F32 && x.dt != DType::BF16 && x.dt != DType::F16)
    throw_error("cuda backend: fill: a non-zero value into a non-floating view");
  const unsigned grid = grid_for(x.numel(), kThreads);
  switch (x.dt) {
    case DType::F32: fill_kernel<<<grid, kThreads, 0, c.stream>>>(mat<float>(x), x.rows, x.cols, v); break;
    case DType::BF16:
      fill_kernel<<<grid, kThreads, 0, c.stream>>>(mat<bf16>(x), x.rows, x.cols,
                                                   __ushort_as_bfloat16(f32_to_bf16_bits(v)));
      break;
    default:
      fill_kernel<<<grid, kThreads, 0, c.stream>>>(mat<f16>(x), x.rows, x.cols, __ushort_as_half(f32_to_f16_bits(v)));
      break;
  }
  XV_CUDA_CHECK_LAUNCH();
}

void copy(const Ctx& c, const DMat& src, const DMat& dst) {
  if (src.numel() == 0) return;
  if (src.dt == dst.dt) {  // pure data movement: bytes, any dtype
    const size_t es = dtype_size(src.dt);
    if (src.contiguous() && dst.contiguous()) {
      XV_CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, size_t(src.numel()) * es, cudaMemcpyDeviceToDevice, c.stream));
      return;
    }
    XV_CUDA_CHECK(cudaMemcpy2DAsync(dst.p, size_t(dst.stride) * es, src.p, size_t(src.stride) * es,
                                    size_t(src.cols) * es, size_t(src.rows), cudaMemcpyDeviceToDevice, c.stream));
    return;
  }
  with_types(src.dt, dst.dt, [&](auto ts, auto td) {
    using TS = typename decltype(ts)::type;
    using TD = typename decltype(td)::type;
    cast_kernel<TS, TD><<<grid_for(src.numel(), kThreads), kThreads, 0, c.stream>>>(mat<const TS>(src), mat<TD>(dst),
                                                                                    src.rows, src.cols);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void add(const Ctx& c, const DMat& y, const DMat& x) {
  if (y.numel() == 0) return;
  with_types(y.dt, x.dt, [&](auto ty, auto tx) {
    using TY = typename decltype(ty)::type;
    using TX = typename decltype(tx)::type;
    add_kernel<TY, TX><<<grid_for(y.numel(), kThreads), kThreads, 0, c.stream>>>(mat<TY>(y), mat<const TX>(x), y.rows,
                                                                                 y.cols);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void add_rows(const Ctx& c, const DMat& x, const DMat& src) {
  if (x.numel() == 0) return;
  with_types(x.dt, src.dt, [&](auto tx, auto ts) {
    using TX = typename decltype(tx)::type;
    using TS = typename decltype(ts)::type;
    add_rows_kernel<TX, TS><<<grid_for(x.numel(), kThreads), kThreads, 0, c.stream>>>(
        mat<TX>(x), mat<const TS>(src), x.rows, x.cols, src.rows);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void scale(const Ctx& c, const DMat& x, float alpha) {
  if (x.numel() == 0) return;
  with_type(x.dt, [&](auto t) {
    using T = typename decltype(t)::type;
    scale_kernel<T><<<grid_for(x.numel(), kThreads), kThreads, 0, c.stream>>>(mat<T>(x), x.rows, x.cols, alpha);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void broadcast_rows(const Ctx& c, const DMat& v, const DMat& out) {
  if (out.numel() == 0) return;
  with_types(v.dt, out.dt, [&](auto tv, auto to) {
    using TV = typename decltype(tv)::type;
    using TO = typename decltype(to)::type;
    broadcast_rows_kernel<TV, TO><<<grid_for(out.numel(), kThreads), kThreads, 0, c.stream>>>(
        vec<const TV>(v), mat<TO>(out), out.rows, out.cols);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void activation(const Ctx& c, ActKind a, const DMat& x) {
  const int64_t n = x.numel();
  if (n == 0) return;
  with_type(x.dt, [&](auto t) {
    using T = typename decltype(t)::type;
    activation_kernel<T><<<grid_for(n, kThreads), kThreads, 0, c.stream>>>(a, static_cast<T*>(x.p), n);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void activation_backward(const Ctx& c, ActKind a, const DMat& x, const DMat& dy, const DMat& dx) {
  const int64_t n = x.numel();
  if (n == 0) return;
  with_types(x.dt, dx.dt, [&](auto ti, auto td) {
    using TI = typename decltype(ti)::type;
    using TD = typename decltype(td)::type;
    activation_backward_kernel<TI, TD><<<grid_for(n, kThreads), kThreads, 0, c.stream>>>(
        a, static_cast<const TI*>(x.p), static_cast<const TI*>(dy.p), static_cast<TD*>(dx.p), n);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void swiglu(const Ctx& c, const DMat& gate_up, const DMat& out) {
  if (out.numel() == 0) return;
  with_types(gate_up.dt, out.dt, [&](auto tg, auto to) {
    using TG = typename decltype(tg)::type;
    using TO = typename decltype(to)::type;
    swiglu_kernel<TG, TO><<<grid_for(out.numel(), kThreads), kThreads, 0, c.stream>>>(
        static_cast<const TG*>(gate_up.p), static_cast<TO*>(out.p), out.rows, out.cols);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void swiglu_backward(const Ctx& c, const DMat& gate_up, const DMat& dout, const DMat& dgate_up) {
  if (dout.numel() == 0) return;
  with_types(gate_up.dt, dgate_up.dt, [&](auto ti, auto td) {
    using TI = typename decltype(ti)::type;
    using TD = typename decltype(td)::type;
    swiglu_backward_kernel<TI, TD><<<grid_for(dout.numel(), kThreads), kThreads, 0, c.stream>>>(
        static_cast<const TI*>(gate_up.p), static_cast<const TI*>(dout.p), static_cast<TD*>(dgate_up.p), dout.rows,
        dout.cols);
  });
  XV_CUDA_CHECK_LAUNCH();
}

void dropout(const Ctx& c, const DMat& x, uint64_t seed, float p, float scale, const DMat& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  with_types(x.dt, out.dt, [&](auto tx, auto to) {
    using TX = typename decltype(tx)::type;
    using TO = typename decltype(to)::type;
    dropout_kernel<TX, TO><<<grid_for(n, kThreads), kThreads, 0, c.stream>>>(static_cast<const TX*>(x.p), n, seed, p,
                                                                             scale, static_cast<TO*>(out.p));
  });
  XV_CUDA_CHECK_LAUNCH();
}

void dropout_backward_add(const Ctx& c, const DMat& din, uint64_t seed, float p, float scale, const DMat& dx) {
  const int64_t n = din.numel();
  if (n == 0) return;
  with_types(din.dt, dx.dt, [&](auto ti, auto td) {
    using TI = typename decltype(ti)::type;
    using TD = typename decltype(td)::type;
    dropout_backward_add_kernel<TI, TD><<<grid_for(n, kThreads), kThreads, 0, c.stream>>>(
        static_cast<const TI*>(din.p), n, seed, p, scale, static_cast<TD*>(dx.p));
  });
  XV_CUDA_CHECK_LAUNCH();
}

}  // namespace xv::cuda
