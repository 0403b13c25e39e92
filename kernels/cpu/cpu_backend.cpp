// The cpu backend: the op set of kernels/ops.h on host memory, through the reference kernels of
// cpu_kernels.h. It computes in f32: a BF16 or F16 input (a frozen weight kept in bf16, say) is widened to f32
// first, per op; outputs and gradients must be F32. Strided views are taken where the kernel takes a row
// stride; elsewhere a strided input is packed first and a strided output refused, naming the op.
#include <cstring>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace xv {

namespace {

// An f32 reading of an input view: its own memory when it is F32, else a widened contiguous copy.
// contiguous = true packs strided F32 rows too.
struct In {
  const float* p = nullptr;
  int64_t stride = 0;
  std::vector<float> buf;
};

In in(const View& v, bool contiguous = false) {
  In r;
  if (!v.present || v.ptr == nullptr) return r;
  if (v.dtype == DType::F32 && (!contiguous || v.contiguous())) {
    r.p = static_cast<const float*>(v.ptr);
    r.stride = v.stride;
    return r;
  }
  XV_CHECK(v.dtype == DType::F32 || v.dtype == DType::BF16 || v.dtype == DType::F16,
           "cpu backend: a {} operand where a floating one was expected", dtype_name(v.dtype));
  r.buf.resize(size_t(v.numel()));
  const size_t es = dtype_size(v.dtype);
  for (int64_t i = 0; i < v.rows; ++i)
    convert_to_f32(v.dtype, static_cast<const char*>(v.ptr) + size_t(i * v.stride) * es, r.buf.data() + i * v.cols,
                   size_t(v.cols));
  r.p = r.buf.data();
  r.stride = v.cols;
  return r;
}

// An output (or accumulated gradient) view: F32, and contiguous unless the kernel takes a stride.
float* out(const View& v, const char* op, bool contiguous = true) {
  if (!v.present || v.ptr == nullptr) return nullptr;
  XV_CHECK(v.dtype == DType::F32, "cpu backend: {} writes F32 only (its output is {}): the cpu computes in f32", op,
           dtype_name(v.dtype));
  XV_CHECK(!contiguous || v.contiguous(), "cpu backend: {} needs a contiguous output (rows {} apart, {} wide)", op,
           v.stride, v.cols);
  return static_cast<float*>(v.ptr);
}

const int32_t* ids(const View& v) { return v.present ? static_cast<const int32_t*>(v.ptr) : nullptr; }

void act_fwd(ops::Act a, float* x, int64_t n) {
  switch (a) {
    case ops::Act::gelu_erf: return cpu::gelu_erf(x, n);
    case ops::Act::gelu_tanh: return cpu::gelu_tanh(x, n);
    case ops::Act::quick_gelu: return cpu::quick_gelu(x, n);
    case ops::Act::silu: return cpu::silu(x, n);
  }
}

void act_bwd(ops::Act a, const float* x, const float* dy, float* dx, int64_t n) {
  switch (a) {
    case ops::Act::gelu_erf: return cpu::gelu_erf_backward(x, dy, dx, n);
    case ops::Act::gelu_tanh: return cpu::gelu_tanh_backward(x, dy, dx, n);
    case ops::Act::quick_gelu: return cpu::quick_gelu_backward(x, dy, dx, n);
    case ops::Act::silu: return cpu::silu_backward(x, dy, dx, n);
  }
}

cpu::AttentionArgs attention_args(const ops::AttentionParams& p, const In& q, const In& k, const In& v,
                                  const In& mask) {
  cpu::AttentionArgs a;
  a.q = q.p, a.k = k.p, a.v = v.p;
  a.q_stride = q.stride, a.k_stride = k.stride, a.v_stride = v.stride;
  a.B = p.B, a.T = p.T, a.Hq = p.Hq, a.Hkv = p.Hkv, a.D = p.D;
  a.key_mask = mask.p;
  a.causal = p.causal;
  a.scale = p.scale;
  return a;
}

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "cpu"; }

  void fill(const View& x, float v) override {
    XV_CHECK(x.dtype == DType::F32 || v == 0.0f, "cpu backend: fill of a {} view with a non-zero value",
             dtype_name(x.dtype));
    const size_t es = dtype_size(x.dtype);
    for (int64_t r = 0; r < x.rows; ++r) {
      char* row = static_cast<char*>(x.ptr) + size_t(r * x.stride) * es;
      if (v == 0.0f) std::memset(row, 0, size_t(x.cols) * es);
      else std::fill(reinterpret_cast<float*>(row), reinterpret_cast<float*>(row) + x.cols, v);
    }
  }

  void copy(const View& src, const View& dst) override {
    const size_t ss = dtype_size(src.dtype), ds = dtype_size(dst.dtype);
    std::vector<float> row(size_t(src.cols));
    for (int64_t r = 0; r < src.rows; ++r) {
      const char* s = static_cast<const char*>(src.ptr) + size_t(r * src.stride) * ss;
      char* d = static_cast<char*>(dst.ptr) + size_t(r * dst.stride) * ds;
      if (src.dtype == dst.dtype) {
        std::memcpy(d, s, size_t(src.cols) * ss);
        continue;
      }
      convert_to_f32(src.dtype, s, row.data(), row.size());
      for (int64_t c = 0; c < src.cols; ++c) {
        switch (dst.dtype) {
          case DType::F32: reinterpret_cast<float*>(d)[c] = row[size_t(c)]; break;
          case DType::BF16: reinterpret_cast<uint16_t*>(d)[c] = f32_to_bf16(row[size_t(c)]); break;
          case DType::F16: reinterpret_cast<uint16_t*>(d)[c] = f32_to_f16(row[size_t(c)]); break;
          default: fail("cpu backend: copy into {}: expected F32, BF16 or F16", dtype_name(dst.dtype));
        }
      }
    }
  }

  void gemm(const View& A, bool ta, const View& B, bool tb, const View& C, float alpha, float beta) override {
    const In a = in(A), b = in(B);
    float* c = out(C, "gemm", false);
    const int64_t M = C.rows, N = C.cols, K = ta ? A.rows : A.cols;
    cpu::gemm(ta, tb, M, N, K, alpha, a.p, a.stride, b.p, b.stride, beta, c, C.stride);
  }

  void linear(const View& x, const View& W, const View& b, const View& y) override {
    const In xi = in(x), wi = in(W, true), bi = in(b, true);
    cpu::linear(xi.p, xi.stride, wi.p, bi.p, out(y, "linear", false), y.stride, x.rows, x.cols, W.rows);
  }

  void linear_backward(const View& x, const View& W, const View& dy, const View& dx, const View& dW,
                       const View& db) override {
    const In xi = in(x), wi = in(W, true), dyi = in(dy);
    cpu::linear_backward(xi.p, xi.stride, wi.p, dyi.p, dyi.stride, out(dx, "linear_backward (dx)", false),
                         dx.present ? dx.stride : W.cols, out(dW, "linear_backward (dW)"),
                         out(db, "linear_backward (db)"), dy.rows, W.cols, W.rows);
  }

  void layernorm(const View& x, const View& g, const View& b, const View& y, float eps) override {
    const In xi = in(x, true), gi = in(g, true), bi = in(b, true);
    cpu::layernorm(xi.p, gi.p, bi.p, out(y, "layernorm"), x.rows, x.cols, eps);
  }
  void layernorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg,
                          const View& db, float eps) override {
    const In xi = in(x, true), gi = in(g, true), dyi = in(dy, true);
    cpu::layernorm_backward(xi.p, gi.p, dyi.p, out(dx, "layernorm_backward (dx)"), out(dg, "layernorm_backward (dg)"),
                            out(db, "layernorm_backward (db)"), x.rows, x.cols, eps);
  }
  void rmsnorm(const View& x, const View& g, const View& y, float eps) override {
    const In xi = in(x, true), gi = in(g, true);
    cpu::rmsnorm(xi.p, gi.p, out(y, "rmsnorm"), x.rows, x.cols, eps);
  }
  void rmsnorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg,
                        float eps) override {
    const In xi = in(x, true), gi = in(g, true), dyi = in(dy, true);
    cpu::rmsnorm_backward(xi.p, gi.p, dyi.p, out(dx, "rmsnorm_backward (dx)"), out(dg, "rmsnorm_backward (dg)"),
                          x.rows, x.cols, eps);
  }
  void l2_normalize(const View& x) override { cpu::l2_normalize(out(x, "l2_normalize"), x.rows, x.cols); }

  void activation(ops::Act a, const View& x) override { act_fwd(a, out(x, "activation"), x.numel()); }
  void activation_backward(ops::Act a, const View& x, const View& dy, const View& dx) override {
    float* d = out(dx, "activation_backward");
    // dx may be dy itself: read dy in place then (it is F32 and contiguous, as dx is).
    const In xi = in(x, true), dyi = dy.ptr == dx.ptr ? In{d, dx.cols, {}} : in(dy, true);
    act_bwd(a, xi.p, dyi.p, d, x.numel());
  }
  void swiglu(const View& gate_up, const View& o) override {
    const In g = in(gate_up, true);
    cpu::swiglu(g.p, out(o, "swiglu"), o.rows, o.cols);
  }
  void swiglu_backward(const View& gate_up, const View& dout, const View& dgate_up) override {
    const In g = in(gate_up, true), d = in(dout, true);
    cpu::swiglu_backward(g.p, d.p, out(dgate_up, "swiglu_backward"), dout.rows, dout.cols);
  }

  void add(const View& y, const View& x) override {
    float* yp = out(y, "add", false);
    const In xi = in(x);
    if (y.contiguous() && (x.rows <= 1 || xi.stride == x.cols)) return cpu::add_inplace(yp, xi.p, y.numel());
    for (int64_t r = 0; r < y.rows; ++r) cpu::add_inplace(yp + r * y.stride, xi.p + r * xi.stride, y.cols);
  }
  void add_rows(const View& x, const View& src) override {
    const In s = in(src);
    cpu::add_rows(out(x, "add_rows", false), x.stride, x.rows, x.cols, s.p, src.rows, s.stride);
  }
  void scale(const View& x, float alpha) override {
    float* p = out(x, "scale", false);
    if (x.contiguous()) return cpu::scale(p, x.numel(), alpha);
    for (int64_t r = 0; r < x.rows; ++r) cpu::scale(p + r * x.stride, x.cols, alpha);
  }

  void gather_rows(const View& a, const View& b, const View& idx, const View& o) override {
    if (a.dtype != DType::F32 || (b.present && b.dtype != DType::F32)) {
      // A 16-bit table (a bf16 embedding): widen only the rows gathered, not the whole table.
      float* dst = out(o, "gather_rows", false);
      const int32_t* k = ids(idx);
      const int64_t n = idx.numel();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const View& src = k[i] >= 0 ? a : b;
        const int64_t row = k[i] >= 0 ? k[i] : -1 - k[i];
        convert_to_f32(src.dtype, static_cast<const char*>(src.ptr) + size_t(row * src.stride) * dtype_size(src.dtype),
                       dst + i * o.stride, size_t(o.cols));
      }
      return;
    }
    const In ai = in(a), bi = in(b);
    cpu::gather_rows(ai.p, ai.stride, bi.p, bi.stride, ids(idx), idx.numel(), o.cols, out(o, "gather_rows", false),
                     o.stride);
  }
  void copy_rows(const View& src, const View& idx, const View& dst) override {
    const In s = in(src);
    cpu::copy_rows(s.p, s.stride, ids(idx), idx.numel(), src.cols, out(dst, "copy_rows", false), dst.stride);
  }
  void scatter_add_rows(const View& src, const View& idx, const View& a, const View& b) override {
    const In s = in(src);
    cpu::scatter_add_rows(s.p, s.stride, ids(idx), idx.numel(), src.cols, out(a, "scatter_add_rows", false),
                          a.present ? a.stride : 0, out(b, "scatter_add_rows", false), b.present ? b.stride : 0);
  }
  void im2col_patches(const View& pixels, int64_t N, int64_t CH, int64_t S, int64_t P, const View& cols) override {
    const In px = in(pixels, true);
    cpu::im2col_patches(px.p, N, CH, S, P, out(cols, "im2col_patches"));
  }

  void rope_tables(double base, const std::vector<float>& ext, float mscale, const View& cos,
                   const View& sin) override {
    cpu::rope_tables(cos.rows, cos.cols, base, ext.empty() ? nullptr : ext.data(), mscale, out(cos, "rope_tables"),
                     out(sin, "rope_tables"));
  }
  void rope(const View& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, const View& cos,
            const View& sin) override {
    const In c = in(cos, true), s = in(sin, true);
    cpu::rope(out(x, "rope", false), B, T, H, D, rot_dim, x.stride, c.p, s.p);
  }
  void rope_backward(const View& dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, const View& cos,
                     const View& sin) override {
    const In c = in(cos, true), s = in(sin, true);
    cpu::rope_backward(out(dx, "rope_backward", false), B, T, H, D, rot_dim, dx.stride, c.p, s.p);
  }

  void attention(const ops::AttentionParams& p) override {
    const In q = in(p.q), k = in(p.k), v = in(p.v), m = in(p.key_mask, true);
    cpu::AttentionArgs a = attention_args(p, q, k, v, m);
    a.o = out(p.o, "attention", false);
    a.o_stride = p.o.stride;
    a.lse = out(p.lse, "attention (lse)", false);
    cpu::attention(a);
  }
  void attention_backward(const ops::AttentionBackwardParams& p) override {
    const In q = in(p.fwd.q), k = in(p.fwd.k), v = in(p.fwd.v), m = in(p.fwd.key_mask, true), d = in(p.dout);
    cpu::AttentionBackwardArgs a;
    a.fwd = attention_args(p.fwd, q, k, v, m);
    a.dout = d.p, a.dout_stride = d.stride;
    a.dq = out(p.dq, "attention_backward (dq)", false), a.dq_stride = p.dq.stride;
    a.dk = out(p.dk, "attention_backward (dk)", false), a.dk_stride = p.dk.stride;
    a.dv = out(p.dv, "attention_backward (dv)", false), a.dv_stride = p.dv.stride;
    cpu::attention_backward(a);
  }

  void masked_mean_rows(const View& x, const View& mask, int64_t B, int64_t T, const View& o) override {
    const In xi = in(x, true), mi = in(mask, true);
    cpu::masked_mean_rows(xi.p, mi.p, B, T, x.cols, out(o, "masked_mean_rows"));
  }
  void masked_mean_rows_backward(const View& dout, const View& mask, int64_t B, int64_t T,
                                 const View& dx) override {
    const In di = in(dout, true), mi = in(mask, true);
    cpu::masked_mean_rows_backward(di.p, mi.p, B, T, dout.cols, out(dx, "masked_mean_rows_backward"));
  }

  void dropout(const View& x, uint64_t seed, float p, const View& o) override {
    const In xi = in(x, true);
    cpu::dropout(xi.p, x.numel(), seed, p, out(o, "dropout"));
  }
  void dropout_backward_add(const View& din, uint64_t seed, float p, const View& dx) override {
    const In di = in(din, true);
    cpu::dropout_backward_add(di.p, din.numel(), seed, p, out(dx, "dropout_backward_add"));
  }

  double mse_loss(const View& s, const View& t, const View& ds, float weight) override {
    const In si = in(s, true), ti = in(t, true);
    return cpu::mse_loss(si.p, ti.p, out(ds, "mse_loss (ds)"), s.numel(), weight);
  }
  void adamw_update(const View& p, const View& g, const View& m, const View& v, float lr, int64_t t,
                    const ops::AdamWParams& c) override {
    const In gi = in(g, true);
    cpu::adamw_update(out(p, "adamw_update (p)"), gi.p, out(m, "adamw_update (m)"), out(v, "adamw_update (v)"),
                      p.numel(), lr, t, c.beta1, c.beta2, c.eps, c.weight_decay);
  }
  std::vector<double> sum_squares_chunks(const View& x, int64_t chunk) override {
    const In xi = in(x, true);
    return cpu::sum_squares_chunks(xi.p, x.numel(), chunk);
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend b;
  return b;
}

}  // namespace xv
