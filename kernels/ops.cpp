// The op set's one front door: each op checks its operands against kernels/ops.h (present where required,
// storage behind them, shapes that agree, one device, index and mask dtypes) and runs on the backend of that
// device. A failed check throws xv::Error naming the op and the operand.
#include "kernels/ops.h"

#include <initializer_list>
#include <optional>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace xv::ops {

namespace {

struct Arg {
  const char* name;
  const View* v;
};

// The device of an op's operands (all present ones must share it), each with storage unless empty.
Device device_of(const char* op, std::initializer_list<Arg> args) {
  const Arg* first = nullptr;
  for (const Arg& a : args) {
    if (!a.v->present) continue;
    XV_CHECK(a.v->ptr || a.v->numel() == 0, "{}: operand '{}' has no storage (a shape-only tensor)", op, a.name);
    XV_CHECK(a.v->rows >= 0 && a.v->cols >= 0 && (a.v->rows <= 1 || a.v->stride >= a.v->cols),
             "{}: operand '{}' has a bad layout ({} x {}, rows {} apart)", op, a.name, a.v->rows, a.v->cols,
             a.v->stride);
    if (!first) {
      first = &a;
      continue;
    }
    XV_CHECK(a.v->device == first->v->device, "{}: operand '{}' is on {}, '{}' on {}", op, a.name,
             a.v->device.str(), first->name, first->v->device.str());
  }
  XV_CHECK(first, "{}: no operand", op);
  return first->v->device;
}

void need(const char* op, const char* name, const View& v) { XV_CHECK(v.present, "{}: operand '{}' is required", op, name); }

void shape(const char* op, const char* name, const View& v, int64_t rows, int64_t cols) {
  XV_CHECK(v.rows == rows && v.cols == cols, "{}: operand '{}' is {} x {}, expected {} x {}", op, name, v.rows, v.cols,
           rows, cols);
}

void elems(const char* op, const char* name, const View& v, int64_t n) {
  XV_CHECK(v.numel() == n, "{}: operand '{}' has {} elements, expected {}", op, name, v.numel(), n);
}

void dtype(const char* op, const char* name, const View& v, DType t) {
  XV_CHECK(v.dtype == t, "{}: operand '{}' is {}, expected {}", op, name, dtype_name(v.dtype), dtype_name(t));
}

bool floating(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

void floats(const char* op, std::initializer_list<Arg> args) {
  for (const Arg& a : args)
    if (a.v->present)
      XV_CHECK(floating(a.v->dtype), "{}: operand '{}' is {}, expected F32, BF16 or F16", op, a.name,
               dtype_name(a.v->dtype));
}

void contiguous(const char* op, const char* name, const View& v) {
  XV_CHECK(!v.present || v.contiguous(), "{}: operand '{}' must be contiguous (rows {} apart, {} wide)", op, name,
           v.stride, v.cols);
}

void index_view(const char* op, const View& idx) {
  need(op, "idx", idx);
  dtype(op, "idx", idx, DType::I32);
  contiguous(op, "idx", idx);
}

// The index values, when they live on the host (indices on a device come from lists checked where they were
// built: the models make them on the host): idx >= 0 must be a row of `a` (when `a` takes them), idx < 0 a row
// -1 - idx of `b` (when `b` takes them). An index whose table is absent is skipped where the op says so, else
// refused.
void index_values(const char* op, const View& idx, const char* a_name, const View& a, bool a_skips, const View& b,
                  bool b_skips) {
  if (!idx.device.is_cpu()) return;
  const int32_t* k = static_cast<const int32_t*>(idx.ptr);
  for (int64_t i = 0; i < idx.numel(); ++i) {
    const int64_t v = k[i];
    if (v >= 0) {
      XV_CHECK(a.present ? v < a.rows : a_skips, "{}: index {} (at {}) is past the {} rows of '{}'", op, v, i,
               a.present ? a.rows : 0, a_name);
    } else {
      XV_CHECK(b.present ? -1 - v < b.rows : b_skips, "{}: index {} (at {}) names row {} of 'b', which has {}", op, v, i,
               -1 - v, b.present ? b.rows : 0);
    }
  }
}

void attention_checks(const char* op, const AttentionParams& p) {
  XV_CHECK(p.B >= 0 && p.T >= 0 && p.Hq >= 1 && p.Hkv >= 1 && p.D >= 1 && p.Hq % p.Hkv == 0,
           "{}: B {}, T {}, Hq {}, Hkv {}, D {}: Hq must be a multiple of Hkv", op, p.B, p.T, p.Hq, p.Hkv, p.D);
  need(op, "q", p.q), need(op, "k", p.k), need(op, "v", p.v);
  shape(op, "q", p.q, p.B * p.T, p.Hq * p.D);
  shape(op, "k", p.k, p.B * p.T, p.Hkv * p.D);
  shape(op, "v", p.v, p.B * p.T, p.Hkv * p.D);
  if (p.key_mask.present) {
    elems(op, "key_mask", p.key_mask, p.B * p.T);
    dtype(op, "key_mask", p.key_mask, DType::F32);
    contiguous(op, "key_mask", p.key_mask);
  }
  if (p.lse.present) {
    elems(op, "lse", p.lse, p.B * p.Hq * p.T);
    dtype(op, "lse", p.lse, DType::F32);
    contiguous(op, "lse", p.lse);
  }
  floats(op, {{"q", &p.q}, {"k", &p.k}, {"v", &p.v}});
}

}  // namespace

void set_num_threads(int n) { cpu::set_num_threads(n); }
int num_threads() { return cpu::num_threads(); }

void fill(const View& x, float v) {
  const Device d = device_of("fill", {{"x", &x}});
  backend(d).fill(x, v);
}

void copy(const View& src, const View& dst) {
  const char* op = "copy";
  need(op, "src", src), need(op, "dst", dst);
  const Device d = device_of(op, {{"src", &src}, {"dst", &dst}});
  shape(op, "dst", dst, src.rows, src.cols);
  XV_CHECK(src.dtype == dst.dtype || (floating(src.dtype) && floating(dst.dtype)),
           "copy: from {} to {}: only floating dtypes convert", dtype_name(src.dtype), dtype_name(dst.dtype));
  backend(d).copy(src, dst);
}

Tensor cast(const Tensor& src, DType t) {
  Tensor out(src.shape(), t, src.device());
  if (src.numel()) copy(src.view(), out.view());
  return out;
}

void gemm(const View& A, bool ta, const View& B, bool tb, const View& C, float alpha, float beta) {
  const char* op = "gemm";
  need(op, "A", A), need(op, "B", B), need(op, "C", C);
  const Device d = device_of(op, {{"A", &A}, {"B", &B}, {"C", &C}});
  const int64_t M = ta ? A.cols : A.rows, K = ta ? A.rows : A.cols;
  const int64_t KB = tb ? B.cols : B.rows, N = tb ? B.rows : B.cols;
  XV_CHECK(K == KB && C.rows == M && C.cols == N, "gemm: op(A) {} x {}, op(B) {} x {}, C {} x {} do not chain", M, K,
           KB, N, C.rows, C.cols);
  floats(op, {{"A", &A}, {"B", &B}, {"C", &C}});
  if (M == 0 || N == 0) return;
  backend(d).gemm(A, ta, B, tb, C, alpha, beta);
}

void linear(const View& x, const View& W, const View& b, const View& y) {
  const char* op = "linear";
  need(op, "x", x), need(op, "W", W), need(op, "y", y);
  const Device d = device_of(op, {{"x", &x}, {"W", &W}, {"b", &b}, {"y", &y}});
  XV_CHECK(x.cols == W.cols, "linear: x has {} columns, W (N, K) is {} x {}", x.cols, W.rows, W.cols);
  shape(op, "y", y, x.rows, W.rows);
  if (b.present) elems(op, "b", b, W.rows);
  floats(op, {{"x", &x}, {"W", &W}, {"b", &b}, {"y", &y}});
  if (x.rows == 0) return;
  backend(d).linear(x, W, b, y);
}

void linear_backward(const View& x, const View& W, const View& dy, const View& dx, const View& dW, const View& db) {
  const char* op = "linear_backward";
  need(op, "W", W), need(op, "dy", dy);
  XV_CHECK(!dW.present || x.present, "linear_backward: dW needs x");
  const Device d = device_of(op, {{"x", &x}, {"W", &W}, {"dy", &dy}, {"dx", &dx}, {"dW", &dW}, {"db", &db}});
  const int64_t M = dy.rows, N = W.rows, K = W.cols;
  XV_CHECK(dy.cols == N, "linear_backward: dy has {} columns, W (N, K) is {} x {}", dy.cols, N, K);
  if (x.present) shape(op, "x", x, M, K);
  if (dx.present) shape(op, "dx", dx, M, K);
  if (dW.present) shape(op, "dW", dW, N, K);
  if (db.present) elems(op, "db", db, N);
  floats(op, {{"x", &x}, {"W", &W}, {"dy", &dy}, {"dx", &dx}, {"dW", &dW}, {"db", &db}});
  if (M == 0 || (!dx.present && !dW.present && !db.present)) return;
  backend(d).linear_backward(x, W, dy, dx, dW, db);
}

void layernorm(const View& x, const View& g, const View& b, const View& y, float eps) {
  const char* op = "layernorm";
  need(op, "x", x), need(op, "g", g), need(op, "y", y);
  const Device d = device_of(op, {{"x", &x}, {"g", &g}, {"b", &b}, {"y", &y}});
  elems(op, "g", g, x.cols);
  if (b.present) elems(op, "b", b, x.cols);
  shape(op, "y", y, x.rows, x.cols);
  floats(op, {{"x", &x}, {"g", &g}, {"b", &b}, {"y", &y}});
  if (x.rows == 0) return;
  backend(d).layernorm(x, g, b, y, eps);
}

void layernorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg, const View& db,
                        float eps) {
  const char* op = "layernorm_backward";
  need(op, "x", x), need(op, "g", g), need(op, "dy", dy);
  const Device d = device_of(op, {{"x", &x}, {"g", &g}, {"dy", &dy}, {"dx", &dx}, {"dg", &dg}, {"db", &db}});
  elems(op, "g", g, x.cols);
  shape(op, "dy", dy, x.rows, x.cols);
  if (dx.present) shape(op, "dx", dx, x.rows, x.cols);
  if (dg.present) elems(op, "dg", dg, x.cols);
  if (db.present) elems(op, "db", db, x.cols);
  floats(op, {{"x", &x}, {"g", &g}, {"dy", &dy}, {"dx", &dx}, {"dg", &dg}, {"db", &db}});
  if (x.rows == 0 || x.cols == 0) return;
  backend(d).layernorm_backward(x, g, dy, dx, dg, db, eps);
}

void rmsnorm(const View& x, const View& g, const View& y, float eps) {
  const char* op = "rmsnorm";
  need(op, "x", x), need(op, "g", g), need(op, "y", y);
  const Device d = device_of(op, {{"x", &x}, {"g", &g}, {"y", &y}});
  elems(op, "g", g, x.cols);
  shape(op, "y", y, x.rows, x.cols);
  floats(op, {{"x", &x}, {"g", &g}, {"y", &y}});
  if (x.rows == 0) return;
  backend(d).rmsnorm(x, g, y, eps);
}

void rmsnorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg, float eps) {
  const char* op = "rmsnorm_backward";
  need(op, "x", x), need(op, "g", g), need(op, "dy", dy);
  const Device d = device_of(op, {{"x", &x}, {"g", &g}, {"dy", &dy}, {"dx", &dx}, {"dg", &dg}});
  elems(op, "g", g, x.cols);
  shape(op, "dy", dy, x.rows, x.cols);
  if (dx.present) shape(op, "dx", dx, x.rows, x.cols);
  if (dg.present) elems(op, "dg", dg, x.cols);
  floats(op, {{"x", &x}, {"g", &g}, {"dy", &dy}, {"dx", &dx}, {"dg", &dg}});
  if (x.rows == 0 || x.cols == 0) return;
  backend(d).rmsnorm_backward(x, g, dy, dx, dg, eps);
}

void l2_normalize(const View& x) {
  need("l2_normalize", "x", x);
  const Device d = device_of("l2_normalize", {{"x", &x}});
  floats("l2_normalize", {{"x", &x}});
  contiguous("l2_normalize", "x", x);
  if (x.rows == 0) return;
  backend(d).l2_normalize(x);
}

void activation(Act a, const View& x) {
  need("activation", "x", x);
  const Device d = device_of("activation", {{"x", &x}});
  floats("activation", {{"x", &x}});
  contiguous("activation", "x", x);
  if (x.numel() == 0) return;
  backend(d).activation(a, x);
}

void activation_backward(Act a, const View& x, const View& dy, const View& dx) {
  const char* op = "activation_backward";
  need(op, "x", x), need(op, "dy", dy), need(op, "dx", dx);
  const Device d = device_of(op, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  elems(op, "dy", dy, x.numel());
  elems(op, "dx", dx, x.numel());
  floats(op, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  contiguous(op, "x", x), contiguous(op, "dy", dy), contiguous(op, "dx", dx);
  if (x.numel() == 0) return;
  backend(d).activation_backward(a, x, dy, dx);
}

void swiglu(const View& gate_up, const View& out) {
  const char* op = "swiglu";
  need(op, "gate_up", gate_up), need(op, "out", out);
  const Device d = device_of(op, {{"gate_up", &gate_up}, {"out", &out}});
  shape(op, "gate_up", gate_up, out.rows, 2 * out.cols);
  floats(op, {{"gate_up", &gate_up}, {"out", &out}});
  contiguous(op, "gate_up", gate_up), contiguous(op, "out", out);
  if (out.numel() == 0) return;
  backend(d).swiglu(gate_up, out);
}

void swiglu_backward(const View& gate_up, const View& dout, const View& dgate_up) {
  const char* op = "swiglu_backward";
  need(op, "gate_up", gate_up), need(op, "dout", dout), need(op, "dgate_up", dgate_up);
  const Device d = device_of(op, {{"gate_up", &gate_up}, {"dout", &dout}, {"dgate_up", &dgate_up}});
  shape(op, "gate_up", gate_up, dout.rows, 2 * dout.cols);
  shape(op, "dgate_up", dgate_up, dout.rows, 2 * dout.cols);
  floats(op, {{"gate_up", &gate_up}, {"dout", &dout}, {"dgate_up", &dgate_up}});
  contiguous(op, "gate_up", gate_up), contiguous(op, "dout", dout), contiguous(op, "dgate_up", dgate_up);
  if (dout.numel() == 0) return;
  backend(d).swiglu_backward(gate_up, dout, dgate_up);
}

void add(const View& y, const View& x) {
  need("add", "y", y), need("add", "x", x);
  const Device d = device_of("add", {{"y", &y}, {"x", &x}});
  shape("add", "x", x, y.rows, y.cols);
  floats("add", {{"y", &y}, {"x", &x}});
  if (y.numel() == 0) return;
  backend(d).add(y, x);
}

void add_rows(const View& x, const View& src) {
  need("add_rows", "x", x), need("add_rows", "src", src);
  const Device d = device_of("add_rows", {{"x", &x}, {"src", &src}});
  floats("add_rows", {{"x", &x}, {"src", &src}});
  if (x.numel() == 0) return;
  XV_CHECK(src.cols == x.cols && src.rows >= 1, "add_rows: src is {} x {}, x has {} columns", src.rows, src.cols,
           x.cols);
  backend(d).add_rows(x, src);
}

void scale(const View& x, float alpha) {
  need("scale", "x", x);
  const Device d = device_of("scale", {{"x", &x}});
  floats("scale", {{"x", &x}});
  if (x.numel() == 0) return;
  backend(d).scale(x, alpha);
}

void gather_rows(const View& a, const View& b, const View& idx, const View& out) {
  const char* op = "gather_rows";
  need(op, "a", a), need(op, "out", out);
  index_view(op, idx);
  const Device d = device_of(op, {{"a", &a}, {"b", &b}, {"idx", &idx}, {"out", &out}});
  XV_CHECK(out.rows == idx.numel() && a.cols == out.cols && (!b.present || b.cols == out.cols),
           "gather_rows: out {} x {} for {} indices from a of {} columns", out.rows, out.cols, idx.numel(), a.cols);
  floats(op, {{"a", &a}, {"b", &b}, {"out", &out}});
  if (out.numel() == 0) return;
  index_values(op, idx, "a", a, false, b, false);
  backend(d).gather_rows(a, b, idx, out);
}

void copy_rows(const View& src, const View& idx, const View& dst) {
  const char* op = "copy_rows";
  need(op, "src", src), need(op, "dst", dst);
  index_view(op, idx);
  const Device d = device_of(op, {{"src", &src}, {"idx", &idx}, {"dst", &dst}});
  XV_CHECK(src.rows == idx.numel() && src.cols == dst.cols, "copy_rows: src {} x {} for {} indices into {} columns",
           src.rows, src.cols, idx.numel(), dst.cols);
  floats(op, {{"src", &src}, {"dst", &dst}});
  if (src.numel() == 0) return;
  index_values(op, idx, "dst", dst, false, View{}, true);
  backend(d).copy_rows(src, idx, dst);
}

void scatter_add_rows(const View& src, const View& idx, const View& a, const View& b) {
  const char* op = "scatter_add_rows";
  need(op, "src", src);
  index_view(op, idx);
  const Device d = device_of(op, {{"src", &src}, {"idx", &idx}, {"a", &a}, {"b", &b}});
  XV_CHECK(src.rows == idx.numel(), "scatter_add_rows: src has {} rows for {} indices", src.rows, idx.numel());
  XV_CHECK((!a.present || a.cols == src.cols) && (!b.present || b.cols == src.cols),
           "scatter_add_rows: a, b and src must have the same columns ({})", src.cols);
  floats(op, {{"src", &src}, {"a", &a}, {"b", &b}});
  if (src.numel() == 0 || (!a.present && !b.present)) return;
  index_values(op, idx, "a", a, true, b, true);
  backend(d).scatter_add_rows(src, idx, a, b);
}

void im2col_patches(const View& pixels, int64_t N, int64_t CH, int64_t S, int64_t P, const View& cols) {
  const char* op = "im2col_patches";
  need(op, "pixels", pixels), need(op, "cols", cols);
  const Device d = device_of(op, {{"pixels", &pixels}, {"cols", &cols}});
  XV_CHECK(P >= 1 && S % P == 0, "im2col_patches: image size {} is not a multiple of the patch size {}", S, P);
  elems(op, "pixels", pixels, N * CH * S * S);
  shape(op, "cols", cols, N * (S / P) * (S / P), CH * P * P);
  floats(op, {{"pixels", &pixels}, {"cols", &cols}});
  contiguous(op, "pixels", pixels), contiguous(op, "cols", cols);
  if (cols.numel() == 0) return;
  backend(d).im2col_patches(pixels, N, CH, S, P, cols);
}

void rope_tables(double base, const std::vector<float>& ext, float mscale, const View& cos, const View& sin) {
  const char* op = "rope_tables";
  need(op, "cos", cos), need(op, "sin", sin);
  const Device d = device_of(op, {{"cos", &cos}, {"sin", &sin}});
  shape(op, "sin", sin, cos.rows, cos.cols);
  XV_CHECK(cos.cols % 2 == 0, "rope_tables: rot_dim {} must be even", cos.cols);
  XV_CHECK(ext.empty() || int64_t(ext.size()) >= cos.cols / 2, "rope_tables: {} scaling factors for rot_dim {}",
           ext.size(), cos.cols);
  contiguous(op, "cos", cos), contiguous(op, "sin", sin);
  backend(d).rope_tables(base, ext, mscale, cos, sin);
}

namespace {
void rope_checks(const char* op, const View& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim,
                 const View& cos, const View& sin) {
  need(op, "x", x), need(op, "cos", cos), need(op, "sin", sin);
  XV_CHECK(rot_dim % 2 == 0 && rot_dim <= D && x.cols >= H * D, "{}: rot_dim {} (even, at most D {}), {} heads in "
           "{} columns", op, rot_dim, D, H, x.cols);
  XV_CHECK(x.rows == B * T, "{}: x has {} rows, B*T = {}", op, x.rows, B * T);
  shape(op, "cos", cos, T, rot_dim), shape(op, "sin", sin, T, rot_dim);
  floats(op, {{"x", &x}, {"cos", &cos}, {"sin", &sin}});
}
}  // namespace

void rope(const View& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, const View& cos,
          const View& sin) {
  rope_checks("rope", x, B, T, H, D, rot_dim, cos, sin);
  const Device d = device_of("rope", {{"x", &x}, {"cos", &cos}, {"sin", &sin}});
  if (x.rows == 0) return;
  backend(d).rope(x, B, T, H, D, rot_dim, cos, sin);
}

void rope_backward(const View& dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, const View& cos,
                   const View& sin) {
  rope_checks("rope_backward", dx, B, T, H, D, rot_dim, cos, sin);
  const Device d = device_of("rope_backward", {{"dx", &dx}, {"cos", &cos}, {"sin", &sin}});
  if (dx.rows == 0) return;
  backend(d).rope_backward(dx, B, T, H, D, rot_dim, cos, sin);
}

void attention(const AttentionParams& p) {
  const char* op = "attention";
  attention_checks(op, p);
  need(op, "o", p.o);
  shape(op, "o", p.o, p.B * p.T, p.Hq * p.D);
  floats(op, {{"o", &p.o}});
  const Device d = device_of(op, {{"q", &p.q}, {"k", &p.k}, {"v", &p.v}, {"o", &p.o}, {"key_mask", &p.key_mask},
                                  {"lse", &p.lse}});
  if (p.B == 0 || p.T == 0) return;
  backend(d).attention(p);
}

void attention_backward(const AttentionBackwardParams& p) {
  const char* op = "attention_backward";
  attention_checks(op, p.fwd);
  need(op, "dout", p.dout);
  const int64_t R = p.fwd.B * p.fwd.T;
  shape(op, "dout", p.dout, R, p.fwd.Hq * p.fwd.D);
  if (p.dq.present) shape(op, "dq", p.dq, R, p.fwd.Hq * p.fwd.D);
  if (p.dk.present) shape(op, "dk", p.dk, R, p.fwd.Hkv * p.fwd.D);
  if (p.dv.present) shape(op, "dv", p.dv, R, p.fwd.Hkv * p.fwd.D);
  floats(op, {{"o", &p.fwd.o}, {"dout", &p.dout}, {"dq", &p.dq}, {"dk", &p.dk}, {"dv", &p.dv}});
  if (p.fwd.o.present) shape(op, "o", p.fwd.o, R, p.fwd.Hq * p.fwd.D);
  const Device d = device_of(op, {{"q", &p.fwd.q}, {"k", &p.fwd.k}, {"v", &p.fwd.v}, {"key_mask", &p.fwd.key_mask},
                                  {"o", &p.fwd.o}, {"lse", &p.fwd.lse}, {"dout", &p.dout}, {"dq", &p.dq},
                                  {"dk", &p.dk}, {"dv", &p.dv}});
  if (R == 0 || (!p.dq.present && !p.dk.present && !p.dv.present)) return;
  backend(d).attention_backward(p);
}

namespace {
void pool_checks(const char* op, const View& rows, const char* rows_name, const View& mask, int64_t B, int64_t T,
                 const View& pooled, const char* pooled_name) {
  need(op, rows_name, rows), need(op, "mask", mask), need(op, pooled_name, pooled);
  XV_CHECK(rows.rows == B * T, "{}: {} has {} rows, B*T = {}", op, rows_name, rows.rows, B * T);
  shape(op, pooled_name, pooled, B, rows.cols);
  elems(op, "mask", mask, B * T);
  dtype(op, "mask", mask, DType::F32);
  floats(op, {{rows_name, &rows}, {pooled_name, &pooled}});
}
}  // namespace

void masked_mean_rows(const View& x, const View& mask, int64_t B, int64_t T, const View& out) {
  pool_checks("masked_mean_rows", x, "x", mask, B, T, out, "out");
  const Device d = device_of("masked_mean_rows", {{"x", &x}, {"mask", &mask}, {"out", &out}});
  if (out.numel() == 0) return;
  backend(d).masked_mean_rows(x, mask, B, T, out);
}

void masked_mean_rows_backward(const View& dout, const View& mask, int64_t B, int64_t T, const View& dx) {
  pool_checks("masked_mean_rows_backward", dx, "dx", mask, B, T, dout, "dout");
  const Device d = device_of("masked_mean_rows_backward", {{"dout", &dout}, {"mask", &mask}, {"dx", &dx}});
  if (dx.numel() == 0) return;
  backend(d).masked_mean_rows_backward(dout, mask, B, T, dx);
}

void dropout(const View& x, uint64_t seed, float p, const View& out) {
  const char* op = "dropout";
  need(op, "x", x), need(op, "out", out);
  const Device d = device_of(op, {{"x", &x}, {"out", &out}});
  XV_CHECK(p >= 0.0f && p < 1.0f, "dropout: p must be in [0, 1), got {}", p);
  shape(op, "out", out, x.rows, x.cols);
  floats(op, {{"x", &x}, {"out", &out}});
  contiguous(op, "x", x), contiguous(op, "out", out);
  if (x.numel() == 0) return;
  backend(d).dropout(x, seed, p, out);
}

void dropout_backward_add(const View& din, uint64_t seed, float p, const View& dx) {
  const char* op = "dropout_backward_add";
  need(op, "din", din), need(op, "dx", dx);
  const Device d = device_of(op, {{"din", &din}, {"dx", &dx}});
  XV_CHECK(p >= 0.0f && p < 1.0f, "dropout_backward_add: p must be in [0, 1), got {}", p);
  shape(op, "dx", dx, din.rows, din.cols);
  floats(op, {{"din", &din}, {"dx", &dx}});
  contiguous(op, "din", din), contiguous(op, "dx", dx);
  if (din.numel() == 0) return;
  backend(d).dropout_backward_add(din, seed, p, dx);
}

namespace {
bool dropout_on(uint64_t seed, float p) { return seed != 0 && p > 0.0f; }
void lora_checks(const char* op, const View& x, const View& A, const View& B, const View& xa, float p, uint64_t seed) {
  need(op, "x", x), need(op, "A", A), need(op, "B", B), need(op, "xa", xa);
  XV_CHECK(p >= 0.0f && p < 1.0f, "{}: dropout p must be in [0, 1), got {}", op, p);
  shape(op, "A", A, A.rows, x.cols);
  XV_CHECK(A.rows >= 1, "{}: A has no rows (rank 0)", op);
  shape(op, "B", B, B.rows, A.rows);
  shape(op, "xa", xa, x.rows, A.rows);
  if (dropout_on(seed, p)) contiguous(op, "x", x);
}
}  // namespace

void lora_forward(const View& x, const View& A, const View& B, float scaling, uint64_t seed, float p, const View& y,
                  const View& xa) {
  const char* op = "lora_forward";
  lora_checks(op, x, A, B, xa, p, seed);
  need(op, "y", y);
  shape(op, "y", y, x.rows, B.rows);
  floats(op, {{"x", &x}, {"A", &A}, {"B", &B}, {"y", &y}, {"xa", &xa}});
  const Device d = device_of(op, {{"x", &x}, {"A", &A}, {"B", &B}, {"y", &y}, {"xa", &xa}});
  if (x.rows == 0) return;
  backend(d).lora_forward(x, A, B, scaling, dropout_on(seed, p) ? seed : 0, dropout_on(seed, p) ? p : 0.0f, y, xa);
}

void lora_backward(const View& x, const View& A, const View& B, const View& xa, float scaling, uint64_t seed,
                   float p, const View& dy, const View& dx, const View& dA, const View& dB) {
  const char* op = "lora_backward";
  lora_checks(op, x, A, B, xa, p, seed);
  need(op, "dy", dy), need(op, "dA", dA), need(op, "dB", dB);
  shape(op, "dy", dy, x.rows, B.rows);
  shape(op, "dA", dA, A.rows, A.cols);
  shape(op, "dB", dB, B.rows, B.cols);
  if (dx.present) shape(op, "dx", dx, x.rows, x.cols);
  if (dx.present && dropout_on(seed, p)) contiguous(op, "dx", dx);
  floats(op, {{"x", &x}, {"A", &A}, {"B", &B}, {"xa", &xa}, {"dy", &dy}, {"dx", &dx}, {"dA", &dA}, {"dB", &dB}});
  const Device d = device_of(op, {{"x", &x}, {"A", &A}, {"B", &B}, {"xa", &xa}, {"dy", &dy}, {"dx", &dx},
                                  {"dA", &dA}, {"dB", &dB}});
  if (x.rows == 0) return;
  backend(d).lora_backward(x, A, B, xa, scaling, dropout_on(seed, p) ? seed : 0, dropout_on(seed, p) ? p : 0.0f,
                           dy, dx, dA, dB);
}

DistillTerms distill_loss(const View& s_en, const View& s_xx, const View& t, float weight, const View& ds_en,
                          const View& ds_xx) {
  const char* op = "distill_loss";
  need(op, "s_en", s_en), need(op, "s_xx", s_xx), need(op, "t", t);
  const Device d = device_of(op, {{"s_en", &s_en}, {"s_xx", &s_xx}, {"t", &t}, {"ds_en", &ds_en}, {"ds_xx", &ds_xx}});
  const int64_t n = t.numel();
  elems(op, "s_en", s_en, n), elems(op, "s_xx", s_xx, n);
  if (ds_en.present) elems(op, "ds_en", ds_en, n);
  if (ds_xx.present) elems(op, "ds_xx", ds_xx, n);
  floats(op, {{"s_en", &s_en}, {"s_xx", &s_xx}, {"t", &t}, {"ds_en", &ds_en}, {"ds_xx", &ds_xx}});
  for (const Arg& a : {Arg{"s_en", &s_en}, Arg{"s_xx", &s_xx}, Arg{"t", &t}, Arg{"ds_en", &ds_en},
                       Arg{"ds_xx", &ds_xx}})
    contiguous(op, a.name, *a.v);
  if (n == 0) return {};
  return backend(d).distill_loss(s_en, s_xx, t, weight, ds_en, ds_xx);
}

namespace {
// The pooled embeddings (B, C) of one side, on h's device.
Tensor pool_side(const char* op, const char* side, const View& h, const DistillPool& pool, int64_t C) {
  Tensor out({pool.B, C}, DType::F32, h.device);
  if (pool.idx.present) {
    XV_CHECK(pool.idx.numel() == pool.B, "{}: {} idx has {} entries, B = {}", op, side, pool.idx.numel(), pool.B);
    gather_rows(h, View{}, pool.idx, out);
  } else {
    XV_CHECK(pool.mask.present, "{}: {} needs idx (last-token pooling) or mask (mean pooling)", op, side);
    masked_mean_rows(h, pool.mask, pool.B, pool.T, out);
  }
  return out;
}
// dh += pooling's adjoint of d (B, C).
void unpool_side(const View& d, const DistillPool& pool, const View& dh) {
  if (pool.idx.present) {
    scatter_add_rows(d, pool.idx, dh, View{});
    return;
  }
  Tensor tmp({dh.rows, dh.cols}, DType::F32, dh.device);
  masked_mean_rows_backward(d, pool.mask, pool.B, pool.T, tmp);
  add(dh, tmp);
}
}  // namespace

DistillTerms distill_loss_pooled(const View& h_en, const DistillPool& pool_en, const View& h_xx,
                                 const DistillPool& pool_xx, const View& t, float weight, const View& dh_en,
                                 const View& dh_xx) {
  const char* op = "distill_loss_pooled";
  need(op, "h_en", h_en), need(op, "h_xx", h_xx), need(op, "t", t);
  XV_CHECK(h_en.cols == t.cols && h_xx.cols == t.cols, "{}: hidden rows of {} and {} columns for a target of {}", op,
           h_en.cols, h_xx.cols, t.cols);
  XV_CHECK(pool_en.B == t.rows && pool_xx.B == t.rows, "{}: B = {} and {} for a target of {} rows", op, pool_en.B,
           pool_xx.B, t.rows);
  if (dh_en.present) shape(op, "dh_en", dh_en, h_en.rows, h_en.cols);
  if (dh_xx.present) shape(op, "dh_xx", dh_xx, h_xx.rows, h_xx.cols);
  const Tensor s_en = pool_side(op, "en", h_en, pool_en, t.cols), s_xx = pool_side(op, "xx", h_xx, pool_xx, t.cols);
  Tensor d_en, d_xx;
  if (dh_en.present) d_en = Tensor(s_en.shape(), DType::F32, s_en.device());
  if (dh_xx.present) d_xx = Tensor(s_xx.shape(), DType::F32, s_xx.device());
  const DistillTerms out = distill_loss(s_en, s_xx, t, weight, dh_en.present ? d_en.view() : View{},
                                        dh_xx.present ? d_xx.view() : View{});
  if (dh_en.present) unpool_side(d_en, pool_en, dh_en);
  if (dh_xx.present) unpool_side(d_xx, pool_xx, dh_xx);
  return out;
}

double mse_loss(const View& s, const View& t, const View& ds, float weight) {
  const char* op = "mse_loss";
  need(op, "s", s), need(op, "t", t);
  const Device d = device_of(op, {{"s", &s}, {"t", &t}, {"ds", &ds}});
  elems(op, "t", t, s.numel());
  if (ds.present) elems(op, "ds", ds, s.numel());
  floats(op, {{"s", &s}, {"t", &t}, {"ds", &ds}});
  contiguous(op, "s", s), contiguous(op, "t", t), contiguous(op, "ds", ds);
  if (s.numel() == 0) return 0.0;
  return backend(d).mse_loss(s, t, ds, weight);
}

void adamw_update(const View& p, const View& g, const View& m, const View& v, float lr, int64_t t,
                  const AdamWParams& cfg) {
  const char* op = "adamw_update";
  need(op, "p", p), need(op, "g", g), need(op, "m", m), need(op, "v", v);
  const Device d = device_of(op, {{"p", &p}, {"g", &g}, {"m", &m}, {"v", &v}});
  XV_CHECK(t >= 1, "adamw_update: update number {} (must be >= 1)", t);
  elems(op, "g", g, p.numel()), elems(op, "m", m, p.numel()), elems(op, "v", v, p.numel());
  for (const Arg& a : {Arg{"p", &p}, Arg{"m", &m}, Arg{"v", &v}}) dtype(op, a.name, *a.v, DType::F32);
  floats(op, {{"g", &g}});
  contiguous(op, "p", p), contiguous(op, "g", g), contiguous(op, "m", m), contiguous(op, "v", v);
  if (p.numel() == 0) return;
  backend(d).adamw_update(p, g, m, v, lr, t, cfg);
}

void adamw_update_multi(const std::vector<AdamWSegment>& segs, float clip, float lr, int64_t t,
                        const AdamWParams& cfg) {
  const char* op = "adamw_update_multi";
  XV_CHECK(t >= 1, "adamw_update_multi: update number {} (must be >= 1)", t);
  std::optional<Device> dev;
  std::vector<AdamWSegment> live;
  for (const AdamWSegment& s : segs) {
    need(op, "p", s.p), need(op, "g", s.g), need(op, "m", s.m), need(op, "v", s.v);
    const Device d = device_of(op, {{"p", &s.p}, {"g", &s.g}, {"m", &s.m}, {"v", &s.v}});
    XV_CHECK(!dev || *dev == d, "adamw_update_multi: segments on {} and {} (one device for all)", dev->str(), d.str());
    dev = d;
    elems(op, "g", s.g, s.p.numel()), elems(op, "m", s.m, s.p.numel()), elems(op, "v", s.v, s.p.numel());
    for (const Arg& a : {Arg{"p", &s.p}, Arg{"g", &s.g}, Arg{"m", &s.m}, Arg{"v", &s.v}}) {
      dtype(op, a.name, *a.v, DType::F32);
      contiguous(op, a.name, *a.v);
    }
    if (s.p.numel() > 0) live.push_back(s);
  }
  if (live.empty()) return;
  backend(*dev).adamw_update_multi(live, clip, lr, t, cfg);
}

std::vector<double> sum_squares_chunks(const View& x, int64_t chunk) {
  need("sum_squares_chunks", "x", x);
  const Device d = device_of("sum_squares_chunks", {{"x", &x}});
  XV_CHECK(chunk >= 1, "sum_squares_chunks: chunk {} (must be >= 1)", chunk);
  floats("sum_squares_chunks", {{"x", &x}});
  contiguous("sum_squares_chunks", "x", x);
  if (x.numel() == 0) return {};
  return backend(d).sum_squares_chunks(x, chunk);
}

}  // namespace xv::ops
