// Every op of kernels/ops.h, forward and backward, on every backend present, against the CPU backend (the
// reference), plus the test's own naive double-precision loops (written from ops.h's contract, not from
// kernels/cpu) that check the reference itself, and the dispatch's error checks.
//
// How a case runs. Random inputs (fixed seeds) are rounded to the dtype under test. The reference is the CPU
// backend on F32 contiguous copies of those rounded values; the backend under test gets the same values in the
// dtype and layout under test: F32, BF16 or F16 inputs (and one "mixed" variant giving each input operand
// another dtype), outputs F32 on the CPU and F32, BF16 or F16 on CUDA, contiguous or column blocks of a wider
// padded buffer (as the models' fused q/k/v), wherever ops.cpp and the CPU backend take a strided view. Input
// buffers must come back unchanged and the padding of output buffers untouched.
//
// Tolerances: |got - want| <= rel |want| + abs, abs times max(1, max |want|) where marked "scaled".
//   CPU backend, every dtype and layout, vs the f32 contiguous reference: EXACT, bit for bit (it widens bf16/f16
//     inputs and packs or strides into the same f32 kernel: nothing may differ).
//   Data movement (fill, copy and cast, gather_rows, copy_rows, im2col_patches; the dropout mask): EXACT on
//     every backend, against the reference rounded once to the output dtype.
//   scatter_add_rows: EXACT in f32 on every backend (ops.h fixes the order of the additions); a bf16/f16
//     output up to 4 rounding steps (rel and scaled abs), the accumulation may round at each repeat.
//   CUDA, f32 outputs: elementwise ops and norm forwards 1e-5 rel + 1e-6 abs (f32 on both sides; CUDA's math
//     functions and reduction order differ from libm's by a few ulp; activation_backward 5e-6 abs scaled, see
//     kActBackward); reductions over many terms (gemm, linear,
//     linear_backward, attention and its backward, norm backward's row sums, masked_mean_rows) 1e-4 rel +
//     1e-5 abs scaled (a different summation order over up to a few hundred terms; TF32 must be off);
//     rope_tables to the f32 rounding of the angle (see RopeTables).
//   CUDA, bf16 / f16 outputs: the f32 tolerance plus one rounding step of the output, 2^-8 / 2^-11 relative.
//   CUDA scalars: mse_loss 1e-6 rel (f64 sums, but s - t may be formed in f32); sum_squares_chunks 1e-12 rel
//     (squares of f32 values are exact in f64; only the order inside a chunk may differ).
//   Naive checks of the CPU's f32 results: elementwise 1e-5 rel + 1e-6 abs (activation_backward 5e-6 abs
//     scaled: gelu_tanh's derivative is ill-conditioned in f32 around x = -5, see kActBackward), reductions
//     1e-4 rel + 1e-5 abs scaled; add, add_rows, scale, data movement and sum_squares_chunks exactly (one
//     correctly rounded f32 operation per element, or the same double sum in the same order); gradients
//     against central differences (double, h = 1e-5 max(1, |x|)) of the naive double forward, or the analytic
//     formula of ops.h where the op is linear (linear_backward, mse_loss's ds, dropout), with the reduction
//     tolerance; rope_backward through the adjoint identity in double.
//
// Backends: cpu always; cuda:N for every GPU present. Without a GPU cuda:0 is still listed, and each op family's
// cuda:0 test is skipped saying so ("no CUDA device: ...").
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/view.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/ops.h"

namespace xv {
// How GoogleTest prints a backend parameter ("cpu", "cuda:0"); found by argument-dependent lookup.
static void PrintTo(const Device& d, std::ostream* os) { *os << d.str(); }
}  // namespace xv

namespace {

using xv::DType;
using xv::Device;
using xv::Tensor;
using xv::View;
namespace ops = xv::ops;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInPad = kNaN;     // padding of input buffers: a kernel reading outside its block gets NaN
constexpr float kOutPad = 768.0f;  // padding of output buffers (exact in every dtype): must stay as it is
// Padding columns before / after the blocks of a strided buffer; the trailing padding grows with each buffer of a
// run (by 0, 1, 2 columns), so that two operands of one op never share a stride by accident.
constexpr int64_t kLeadPad = 3, kTrailPad = 2;

// ---- Tolerances ----------------------------------------------------------------------------------------

struct Tol {
  double rel = 0.0, abs = 0.0;
  bool scaled = false;  // abs times max(1, max |want|)
  bool exact() const { return rel == 0.0 && abs == 0.0; }
};
constexpr Tol kExact{};
constexpr Tol kElem{1e-5, 1e-6, false};
constexpr Tol kReduce{1e-4, 1e-5, true};
// activation_backward: gelu_tanh's f' = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2) near t = -1 (x around -5)
// magnifies the f32 rounding of t (~1.2e-7) about tenfold: ~6e-7 per unit dy even with a correctly rounded tanhf,
// up to 2e-6 with the CPU's tanh through exp (measured); dy is up to 2 here.
constexpr Tol kActBackward{1e-5, 5e-6, true};
constexpr double kBf16Step = 1.0 / 256.0, kF16Step = 1.0 / 2048.0;  // one rounding, relative
constexpr double kMseRelCuda = 1e-6, kSumSquaresRelCuda = 1e-12;
constexpr double kFdStep = 1e-5;

double rounding_step(DType t) { return t == DType::BF16 ? kBf16Step : t == DType::F16 ? kF16Step : 0.0; }

std::string tol_str(const Tol& t) {
  if (t.exact()) return "exact";
  std::ostringstream s;
  s << t.rel << " rel + " << t.abs << " abs" << (t.scaled ? " (scaled)" : "");
  return s.str();
}

// ---- Host matrices ----------------------------------------------------------------------------------------

struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<float> v;
  Mat() = default;
  Mat(int64_t r, int64_t c, float fill = 0.0f) : rows(r), cols(c), v(size_t(r * c), fill) {}
  float& at(int64_t r, int64_t c) { return v[size_t(r * cols + c)]; }
  float at(int64_t r, int64_t c) const { return v[size_t(r * cols + c)]; }
};

struct DMat {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  DMat() = default;
  DMat(int64_t r, int64_t c, double fill = 0.0) : rows(r), cols(c), v(size_t(r * c), fill) {}
  explicit DMat(const Mat& m) : rows(m.rows), cols(m.cols), v(m.v.begin(), m.v.end()) {}
  double& at(int64_t r, int64_t c) { return v[size_t(r * cols + c)]; }
  double at(int64_t r, int64_t c) const { return v[size_t(r * cols + c)]; }
};

Mat rand_mat(int64_t rows, int64_t cols, uint32_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  Mat m(rows, cols);
  for (float& x : m.v) x = d(g);
  return m;
}

double dot(const DMat& a, const DMat& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.v.size(); ++i) s += a.v[i] * b.v[i];
  return s;
}

// Round to nearest, ties to even, into a binary format with `mant` stored mantissa bits, smallest normal
// exponent `emin` (subnormals below it) and largest finite value `max_finite` (infinity beyond), computed in
// double: independent of core/dtype.cpp's bit manipulations, which the CopyCast test checks through ops::copy.
float round_format(float xf, int mant, int emin, double max_finite) {
  if (std::isnan(xf) || std::isinf(xf) || xf == 0.0f) return xf;
  const double x = xf, a = std::fabs(x);
  const int e = std::max(std::ilogb(a), emin);
  const double q = std::ldexp(1.0, e - mant);  // the spacing of the format around a
  double r = std::nearbyint(a / q) * q;        // default rounding mode: nearest, ties to even
  if (r > max_finite) r = INFINITY;
  return float(std::copysign(r, x));
}

float round_to(DType t, float x) {
  switch (t) {
    case DType::BF16: return round_format(x, 7, -126, std::ldexp(255.0 / 128.0, 127));
    case DType::F16: return round_format(x, 10, -14, 65504.0);
    default: return x;
  }
}

Mat rounded(const Mat& m, DType t) {
  Mat r = m;
  for (float& x : r.v) x = round_to(t, x);
  return r;
}

bool same_value(float a, float b) {  // bit for bit, any NaN equal to any NaN
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::memcmp(&a, &b, sizeof a) == 0;
}

std::string dtype_str(DType t) { return std::string(xv::dtype_name(t)); }

// Compares got with want (float or double values) under `tol`; exact: got equals float(want) bit for bit.
// Only the elements in `at` when given. Reports the first mismatches as (row, col).
template <class W>
bool expect_values(const std::vector<float>& got, const std::vector<W>& want, int64_t cols, const Tol& tol,
                   const std::string& what, const std::vector<size_t>* at = nullptr) {
  if (got.size() != want.size()) {
    ADD_FAILURE() << what << ": " << got.size() << " values, expected " << want.size();
    return false;
  }
  double maxabs = 0.0;
  for (const W& w : want)
    if (std::isfinite(double(w))) maxabs = std::max(maxabs, std::fabs(double(w)));
  const double abs_tol = tol.abs * (tol.scaled ? std::max(1.0, maxabs) : 1.0);
  size_t bad = 0, checked = 0;
  std::ostringstream first;
  first.precision(9);
  auto check = [&](size_t i) {
    ++checked;
    const double g = got[i], w = double(want[i]);
    bool ok;
    if (tol.exact()) ok = same_value(got[i], float(want[i]));
    else if (std::isnan(g) || std::isnan(w)) ok = std::isnan(g) && std::isnan(w);
    else if (std::isinf(g) || std::isinf(w)) ok = g == w;
    else ok = std::fabs(g - w) <= tol.rel * std::fabs(w) + abs_tol;
    if (!ok && bad++ < 6)
      first << "\n    (" << int64_t(i) / std::max<int64_t>(cols, 1) << ", " << int64_t(i) % std::max<int64_t>(cols, 1)
            << "): got " << g << ", want " << w << " (diff " << g - w << ")";
  };
  if (at) {
    for (size_t i : *at) check(i);
  } else {
    for (size_t i = 0; i < got.size(); ++i) check(i);
  }
  if (bad)
    ADD_FAILURE() << what << ": " << bad << " of " << checked << " values differ (tolerance " << tol_str(tol)
                  << ")" << first.str();
  return bad == 0;
}

bool expect_mat(const Mat& got, const Mat& want, const Tol& tol, const std::string& what) {
  if (got.rows != want.rows || got.cols != want.cols) {
    ADD_FAILURE() << what << ": got " << got.rows << " x " << got.cols << ", want " << want.rows << " x "
                  << want.cols;
    return false;
  }
  return expect_values(got.v, want.v, got.cols, tol, what);
}

bool expect_mat(const Mat& got, const DMat& want, const Tol& tol, const std::string& what,
                const std::vector<size_t>* at = nullptr) {
  if (got.rows != want.rows || got.cols != want.cols) {
    ADD_FAILURE() << what << ": got " << got.rows << " x " << got.cols << ", want " << want.rows << " x "
                  << want.cols;
    return false;
  }
  return expect_values(got.v, want.v, got.cols, tol, what, at);
}

// d loss / d x[i] by central differences in double for the elements `at` (every element when empty); x is
// restored. Elements not computed are NaN.
DMat central_diff(DMat& x, const std::function<double()>& loss, const std::vector<size_t>& at = {}) {
  DMat g(x.rows, x.cols, std::numeric_limits<double>::quiet_NaN());
  auto one = [&](size_t i) {
    const double x0 = x.v[i], h = kFdStep * std::max(1.0, std::fabs(x0));
    x.v[i] = x0 + h;
    const double lp = loss();
    x.v[i] = x0 - h;
    const double lm = loss();
    x.v[i] = x0;
    g.v[i] = (lp - lm) / (2.0 * h);
  };
  if (at.empty()) {
    for (size_t i = 0; i < x.v.size(); ++i) one(i);
  } else {
    for (size_t i : at) one(i);
  }
  return g;
}

DMat plus(const Mat& a, const DMat& b) {  // a + b (an accumulated gradient's expected value)
  DMat r(a);
  for (size_t i = 0; i < r.v.size(); ++i) r.v[i] += b.v[i];
  return r;
}

// ---- Device buffers ---------------------------------------------------------------------------------------

// One device buffer holding operands as column blocks side by side (a fused q/k/v buffer), with padding
// columns around them when `padded`. Inputs must come back unchanged, outputs with their padding unchanged.
class Buffer {
 public:
  Buffer(const std::vector<Mat>& parts, DType t, Device d, bool padded, float pad, bool input, int64_t extra = 0)
      : input_(input) {
    rows_ = parts.at(0).rows;
    width_ = padded ? kLeadPad : 0;
    for (const Mat& p : parts) {
      blocks_.emplace_back(width_, p.cols);
      width_ += p.cols;
    }
    if (padded) width_ += kTrailPad + extra;
    std::vector<float> host(size_t(rows_ * width_), pad);
    for (size_t b = 0; b < parts.size(); ++b)
      for (int64_t r = 0; r < rows_; ++r)
        for (int64_t c = 0; c < parts[b].cols; ++c)
          host[size_t(r * width_ + blocks_[b].first + c)] = parts[b].at(r, c);
    t_ = Tensor::from_vector({rows_, width_}, host, t, d);
    initial_ = t_.to_vector();
  }
  View view(size_t i) const { return t_.cols(blocks_[i].first, blocks_[i].second); }
  DType dtype() const { return t_.dtype(); }
  Mat read(size_t i) const {
    const std::vector<float> all = t_.to_vector();
    Mat m(rows_, blocks_[i].second);
    for (int64_t r = 0; r < rows_; ++r)
      for (int64_t c = 0; c < m.cols; ++c) m.at(r, c) = all[size_t(r * width_ + blocks_[i].first + c)];
    return m;
  }
  bool intact(std::string* why) const {
    const std::vector<float> now = t_.to_vector();
    for (int64_t r = 0; r < rows_; ++r)
      for (int64_t c = 0; c < width_; ++c) {
        bool in_block = false;
        for (const auto& b : blocks_) in_block |= c >= b.first && c < b.first + b.second;
        if (!input_ && in_block) continue;
        const size_t i = size_t(r * width_ + c);
        if (!same_value(now[i], initial_[i])) {
          *why = (input_ ? "input changed at (" : "output padding changed at (") + std::to_string(r) + ", " +
                 std::to_string(c) + "): " + std::to_string(initial_[i]) + " -> " + std::to_string(now[i]);
          return false;
        }
      }
    return true;
  }

 private:
  Tensor t_;
  int64_t rows_ = 0, width_ = 0;
  std::vector<std::pair<int64_t, int64_t>> blocks_;  // (first column, columns)
  std::vector<float> initial_;
  bool input_;
};

struct Result {
  std::string name;
  Mat m;
  DType t = DType::F32;
};

struct Outs {
  std::vector<Result> r;
  std::vector<double> s;  // returned scalars
};

struct Arg {
  View v;
  const Buffer* buf = nullptr;
  size_t block = 0;
  operator View() const { return v; }  // NOLINT: passed to the ops as its view
  Result result(const std::string& name) const { return {name, buf->read(block), buf->dtype()}; }
};

// Which layouts an op takes: strided (column-block) inputs, strided outputs.
struct Layouts {
  bool in = false, out = false;
};

// The dtypes and layout of one run: inputs `in` (or, mixed, a dtype per input operand), outputs `out`.
struct Variant {
  DType in = DType::F32, out = DType::F32;
  bool strided = false, mixed = false;
  DType in_dtype(int j) const {
    static constexpr DType kCycle[] = {DType::BF16, DType::F16, DType::F32};
    return mixed ? kCycle[j % 3] : in;
  }
  std::string str() const {
    return std::string(mixed ? "mixed" : dtype_str(in)) + " -> " + dtype_str(out) +
           (strided ? ", strided" : ", contiguous");
  }
};

std::vector<Variant> variants(Device dev, Layouts lay) {
  std::vector<DType> outs{DType::F32};
  if (!dev.is_cpu()) outs.insert(outs.end(), {DType::BF16, DType::F16});
  std::vector<Variant> v;
  for (DType o : outs)
    for (DType i : {DType::F32, DType::BF16, DType::F16}) {
      v.push_back({i, o, false, false});
      if (lay.in || lay.out) v.push_back({i, o, true, false});
    }
  for (DType o : outs) v.push_back({DType::F32, o, lay.in || lay.out, true});
  return v;
}

// Makes the operands of one run on one device: values rounded as `values` says, stored as `store` says (the
// reference stores F32 contiguous copies of the values of the variant under test).
class Ctx {
 public:
  Ctx(Device d, Variant store, Variant values, Layouts lay) : dev_(d), store_(store), values_(values), lay_(lay) {}

  // Input operand number j (its dtype in the mixed variant).
  Arg in(int j, const Mat& m, bool strided_ok = true) {
    return add({rounded(m, values_.in_dtype(j))}, store_.in_dtype(j), store_.strided && lay_.in && strided_ok,
               kInPad, true)[0];
  }
  // An output, in-place or accumulated operand holding `init` (rounded to the output dtype).
  Arg out(const Mat& init, bool strided_ok = true) {
    return add({rounded(init, values_.out)}, store_.out, store_.strided && lay_.out && strided_ok, kOutPad,
               false)[0];
  }
  // An output of a fixed dtype on every backend (adamw_update's p, m, v).
  Arg out_as(const Mat& init, DType t) { return add({rounded(init, t)}, t, false, kOutPad, false)[0]; }
  // An input of a fixed dtype, contiguous (masks).
  Arg fixed(const Mat& m, DType t) { return add({rounded(m, t)}, t, false, kInPad, true)[0]; }
  // Inputs that are column blocks of one buffer in the strided variant (a fused q/k/v), separate otherwise.
  std::vector<Arg> fused_in(int j, const std::vector<const Mat*>& parts) {
    const bool fused_values = values_.strided && lay_.in, fused_store = store_.strided && lay_.in;
    std::vector<Mat> r;
    for (size_t i = 0; i < parts.size(); ++i)
      r.push_back(rounded(*parts[i], values_.in_dtype(fused_values ? j : j + int(i))));
    if (fused_store) return add(r, store_.in_dtype(j), true, kInPad, true);
    std::vector<Arg> out;
    for (size_t i = 0; i < r.size(); ++i)
      out.push_back(add({r[i]}, store_.in_dtype(fused_values ? j : j + int(i)), false, kInPad, true)[0]);
    return out;
  }
  // Outputs that are column blocks of one buffer in the strided variant (a fused dq/dk/dv), separate otherwise.
  std::vector<Arg> fused_out(const std::vector<const Mat*>& parts) {
    std::vector<Mat> r;
    for (const Mat* p : parts) r.push_back(rounded(*p, values_.out));
    if (store_.strided && lay_.out) return add(r, store_.out, true, kOutPad, false);
    std::vector<Arg> out;
    for (const Mat& m : r) out.push_back(add({m}, store_.out, false, kOutPad, false)[0]);
    return out;
  }
  View index(const std::vector<int32_t>& idx) {
    idx_.push_back(Tensor::from_vector({int64_t(idx.size())}, idx, dev_));
    return idx_.back().view();
  }
  bool intact(std::string* why) const {
    for (const Buffer& b : bufs_)
      if (!b.intact(why)) return false;
    return true;
  }
  Device device() const { return dev_; }

 private:
  std::vector<Arg> add(const std::vector<Mat>& parts, DType t, bool padded, float pad, bool input) {
    bufs_.emplace_back(parts, t, dev_, padded, pad, input, int64_t(bufs_.size() % 3));
    std::vector<Arg> a;
    for (size_t i = 0; i < parts.size(); ++i) a.push_back({bufs_.back().view(i), &bufs_.back(), i});
    return a;
  }
  Device dev_;
  Variant store_, values_;
  Layouts lay_;
  std::deque<Buffer> bufs_;
  std::deque<Tensor> idx_;
};

using Body = std::function<Outs(Ctx&)>;

// What an op takes and how closely another backend must agree with the reference.
struct Spec {
  Layouts lay;
  Tol f32 = kElem;          // CUDA's agreement on f32 outputs
  bool movement = false;    // data movement: exact on every backend
  int roundings = 1;        // rounding steps allowed on a bf16 / f16 output
  double scalar_rel = 0.0;  // CUDA's agreement on returned scalars
  // Rounding steps of the input dtype allowed (scaled by the largest value) when bf16 / f16 inputs let CUDA
  // compute in that dtype (flash attention's tensor-core products round P and dS to bf16).
  int lowp_in = 0;
};

Tol device_tol(Device dev, DType out, const Spec& s, const Variant& var) {
  if (dev.is_cpu() || s.movement) return kExact;
  Tol t = s.f32;
  if (s.lowp_in && !var.mixed && var.in != DType::F32) {
    const double step = rounding_step(var.in) * s.lowp_in;
    t.rel += step, t.abs += step, t.scaled = true;
  }
  if (out != DType::F32) {
    const double step = rounding_step(out) * s.roundings;
    t.rel += step;
    if (s.roundings > 1) t.abs += step, t.scaled = true;
  }
  return t;
}

void compare_outs(Device dev, const Spec& spec, const Variant& var, const Outs& got, const Outs& want,
                  const std::string& what) {
  ASSERT_EQ(got.r.size(), want.r.size()) << what;
  ASSERT_EQ(got.s.size(), want.s.size()) << what;
  for (size_t i = 0; i < got.r.size(); ++i) {
    const Tol tol = device_tol(dev, got.r[i].t, spec, var);
    const Mat w = tol.exact() ? rounded(want.r[i].m, got.r[i].t) : want.r[i].m;
    expect_mat(got.r[i].m, w, tol, what + " " + got.r[i].name);
  }
  for (size_t i = 0; i < got.s.size(); ++i) {
    if (dev.is_cpu()) {
      EXPECT_EQ(got.s[i], want.s[i]) << what << " scalar " << i;
    } else {
      EXPECT_NEAR(got.s[i], want.s[i], spec.scalar_rel * std::fabs(want.s[i])) << what << " scalar " << i;
    }
  }
}

// Runs `body` on `dev` in every variant it takes and compares each with the reference; returns the reference
// outputs of the plain f32 variant (the CPU on f32 contiguous inputs), for the naive checks.
Outs check_backends(Device dev, const Spec& spec, const Body& body, const std::string& what) {
  Outs plain;
  bool first = true;
  for (const Variant& var : variants(dev, spec.lay)) {
    const std::string w = what + " [" + var.str() + " on " + dev.str() + "]";
    Ctx ref(Device::cpu(), Variant{}, var, spec.lay);
    Outs want = body(ref);
    Ctx test(dev, var, var, spec.lay);
    Outs got = body(test);
    std::string why;
    EXPECT_TRUE(test.intact(&why)) << w << ": " << why;
    compare_outs(dev, spec, var, got, want, w);
    if (first) plain = std::move(want), first = false;
  }
  return plain;
}

// ---- The backends ---------------------------------------------------------------------------------------

std::vector<Device> backends_under_test() {
  std::vector<Device> d{Device::cpu()};
  const int n = xv::cuda_device_count();
  for (int i = 0; i < std::max(n, 1); ++i) d.push_back(Device::cuda(i));  // cuda:0 listed (and skipped) without one
  return d;
}

class BackendOps : public ::testing::TestWithParam<Device> {
 protected:
  void SetUp() override {
    if (dev().is_cuda()) {
      if (dev().index >= xv::cuda_device_count()) {
        const std::string why = xv::cuda_compiled() ? "no GPU or driver" : "this build has no CUDA backend";
        GTEST_SKIP() << "no CUDA device: " << ::testing::UnitTest::GetInstance()->current_test_info()->name()
                     << " not run on " << dev().str() << " (" << why << ")";
      }
      xv::backend(dev());  // starts the backend (registers its memory) before tensors are made there
    }
  }
  Device dev() const { return GetParam(); }
  bool on_cpu() const { return dev().is_cpu(); }
};

INSTANTIATE_TEST_SUITE_P(Backends, BackendOps, ::testing::ValuesIn(backends_under_test()),
                         [](const ::testing::TestParamInfo<Device>& i) {
                           return i.param.is_cpu() ? std::string("cpu") : "cuda" + std::to_string(i.param.index);
                         });

std::string fmt_case(const std::string& op, std::initializer_list<std::pair<const char*, int64_t>> kv) {
  std::string s = op;
  for (const auto& [k, v] : kv) s += " " + std::string(k) + "=" + std::to_string(v);
  return s;
}

// ---- Memory: fill, copy, cast -------------------------------------------------------------------------------

// fill is data movement: the view becomes v exactly (rounded to its dtype) on every backend, padding untouched.
// The CPU fills non-F32 views with 0 only (memset), and I32 views too.
TEST_P(BackendOps, Fill) {
  std::vector<std::pair<DType, float>> cases{{DType::F32, 1.5f}, {DType::F32, -3.0e-7f}, {DType::F32, 0.0f},
                                             {DType::BF16, 0.0f}, {DType::F16, 0.0f}};
  if (!on_cpu()) cases.insert(cases.end(), {{DType::BF16, 1.0f / 3.0f}, {DType::F16, -2.7182818f}});
  uint32_t seed = 1;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {65, 3}})
    for (const auto& [t, v] : cases)
      for (bool strided : {false, true}) {
        const std::string what = fmt_case("fill " + dtype_str(t) + (strided ? " strided" : ""), {{"rows", rows},
                                                                                               {"cols", cols}});
        Buffer buf({rounded(rand_mat(rows, cols, seed++), t)}, t, dev(), strided, kOutPad, false);
        ops::fill(buf.view(0), v);
        expect_mat(buf.read(0), Mat(rows, cols, round_to(t, v)), kExact, what);
        std::string why;
        EXPECT_TRUE(buf.intact(&why)) << what << ": " << why;
      }
  Tensor ids = Tensor::from_vector({9}, std::vector<int32_t>{1, -2, 3, 4, 5, 6, 7, 8, 9}, dev());
  ops::fill(ids.view(), 0.0f);
  EXPECT_EQ(ids.to_i32_vector(), std::vector<int32_t>(9, 0)) << "fill of an I32 view with 0";
}

// copy converts with round-to-nearest-even, checked against the test's own rounding in double (ties, f16
// subnormals and overflow, f32 subnormals, infinities, NaN): exact on every backend, any strides.
TEST_P(BackendOps, CopyCast) {
  const float specials[32] = {0.0f, -0.0f, 1.0f, -1.0f,
                              1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f,
                              65504.0f, 65519.0f, 65520.0f, 1.0e5f,
                              -1.0e5f, 0x1p-24f, 0x1p-25f, 3 * 0x1p-26f,
                              1.0e-10f, 0x1p-14f, 0x1p-14f - 0x1p-25f, 1.0e-40f,
                              3.4e38f, -3.4e38f, INFINITY, -INFINITY,
                              kNaN, 3.14159265f, -2.71828f, 0.1f,
                              1.0e30f, 123456.789f, -1.0f / 3.0f, 255.5f};
  Mat special(4, 8);
  special.v.assign(std::begin(specials), std::end(specials));
  const DType floats[] = {DType::F32, DType::BF16, DType::F16};
  uint32_t seed = 10;
  for (const Mat& src_vals : {special, rand_mat(1, 1, 2), rand_mat(65, 33, 3, -100.0f, 100.0f)})
    for (DType st : floats)
      for (DType dt : floats)
        for (int layout = 0; layout < 4; ++layout) {
          const bool s_strided = layout & 1, d_strided = layout & 2;
          const std::string what = fmt_case("copy " + dtype_str(st) + (s_strided ? " strided" : "") + " -> " +
                                                dtype_str(dt) + (d_strided ? " strided" : ""),
                                            {{"rows", src_vals.rows}, {"cols", src_vals.cols}});
          const Mat sv = rounded(src_vals, st);
          Buffer s({sv}, st, dev(), s_strided, kInPad, true);
          Buffer d({rounded(rand_mat(sv.rows, sv.cols, seed++), dt)}, dt, dev(), d_strided, kOutPad, false);
          ops::copy(s.view(0), d.view(0));
          expect_mat(d.read(0), rounded(sv, dt), kExact, what);
          std::string why;
          EXPECT_TRUE(s.intact(&why) && d.intact(&why)) << what << ": " << why;
        }
  // Same-dtype copies of other dtypes move bytes.
  const std::vector<int32_t> ids{7, -1, 2147483647, -2147483647 - 1, 0, 42};
  Tensor a = Tensor::from_vector({2, 3}, ids, dev()), b({2, 3}, DType::I32, dev());
  ops::copy(a.view(), b.view());
  EXPECT_EQ(b.to_i32_vector(), ids) << "copy I32 -> I32";
  // cast: a new tensor on the source's device.
  for (DType st : floats)
    for (DType dt : floats) {
      const Mat sv = rounded(special, st);
      Tensor src = Tensor::from_vector({sv.rows, sv.cols}, sv.v, st, dev());
      Tensor out = ops::cast(src, dt);
      EXPECT_EQ(out.dtype(), dt);
      EXPECT_EQ(out.device(), dev());
      EXPECT_EQ(out.shape(), src.shape());
      Mat got(sv.rows, sv.cols);
      got.v = out.to_vector();
      expect_mat(got, rounded(sv, dt), kExact, "cast " + dtype_str(st) + " -> " + dtype_str(dt));
    }
}

// ---- GEMM and Linear ----------------------------------------------------------------------------------------

DMat naive_gemm(const Mat& A, bool ta, const Mat& B, bool tb, const Mat& C0, double alpha, double beta) {
  const int64_t M = ta ? A.cols : A.rows, K = ta ? A.rows : A.cols, N = tb ? B.rows : B.cols;
  DMat C(M, N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < K; ++k) s += double(ta ? A.at(k, i) : A.at(i, k)) * (tb ? B.at(j, k) : B.at(k, j));
      C.at(i, j) = alpha * s + (beta != 0.0 ? beta * C0.at(i, j) : 0.0);
    }
  return C;
}

// Naive: double loops (ops.h's formula); beta 0 must ignore C's NaNs.
TEST_P(BackendOps, Gemm) {
  struct Dims {
    int64_t M, N, K;
  };
  struct Coef {
    float alpha, beta;
    bool nan_c;
  };
  const Spec spec{{true, true}, kReduce};
  uint32_t seed = 100;
  for (Dims s : {Dims{1, 1, 1}, Dims{3, 7, 5}, Dims{33, 65, 7}, Dims{65, 33, 127}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (Coef cf : {Coef{1.0f, 0.0f, false}, Coef{0.5f, 1.5f, false}, Coef{-2.0f, 0.0f, true}}) {
          const Mat A = ta ? rand_mat(s.K, s.M, seed++) : rand_mat(s.M, s.K, seed++);
          const Mat B = tb ? rand_mat(s.N, s.K, seed++) : rand_mat(s.K, s.N, seed++);
          const Mat C0 = cf.nan_c ? Mat(s.M, s.N, kNaN) : rand_mat(s.M, s.N, seed++);
          const std::string what = fmt_case("gemm", {{"M", s.M}, {"N", s.N}, {"K", s.K}, {"ta", ta}, {"tb", tb}}) +
                                   " alpha=" + std::to_string(cf.alpha) + " beta=" + std::to_string(cf.beta) +
                                   (cf.nan_c ? " (C NaN)" : "");
          const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
            const Arg a = c.in(0, A), b = c.in(1, B), C = c.out(C0);
            ops::gemm(a, ta, b, tb, C, cf.alpha, cf.beta);
            return Outs{{C.result("C")}, {}};
          }, what);
          if (on_cpu())
            expect_mat(ref.r[0].m, naive_gemm(A, ta, B, tb, C0, cf.alpha, cf.beta), kReduce, what + " vs naive");
        }
}

DMat naive_linear(const DMat& x, const DMat& W, const DMat* b) {
  DMat y(x.rows, W.rows);
  for (int64_t i = 0; i < x.rows; ++i)
    for (int64_t n = 0; n < W.rows; ++n) {
      double s = b ? b->v[size_t(n)] : 0.0;
      for (int64_t k = 0; k < x.cols; ++k) s += x.at(i, k) * W.at(n, k);
      y.at(i, n) = s;
    }
  return y;
}

// Naive: double loops. y starts as NaN (overwritten).
TEST_P(BackendOps, Linear) {
  const Spec spec{{true, true}, kReduce};
  uint32_t seed = 200;
  for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 33, 3}, {65, 127, 33}, {130, 7, 65}})
    for (bool bias : {false, true}) {
      const Mat X = rand_mat(M, K, seed++), W = rand_mat(N, K, seed++), Bv = rand_mat(1, N, seed++);
      const std::string what = fmt_case("linear", {{"M", M}, {"K", K}, {"N", N}, {"bias", bias}});
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg x = c.in(0, X), w = c.in(1, W);
        const View b = bias ? View(c.in(2, Bv)) : View{};
        const Arg y = c.out(Mat(M, N, kNaN));
        ops::linear(x, w, b, y);
        return Outs{{y.result("y")}, {}};
      }, what);
      const DMat bd(Bv);
      if (on_cpu())
        expect_mat(ref.r[0].m, naive_linear(DMat(X), DMat(W), bias ? &bd : nullptr), kReduce, what + " vs naive");
    }
}

// Naive: the analytic formulas of ops.h in double (the op is linear in each gradient). dx starts as NaN
// (overwritten), dW and db random (accumulated). Every present/absent combination; x absent with dW absent.
TEST_P(BackendOps, LinearBackward) {
  const Spec spec{{true, true}, kReduce};
  uint32_t seed = 300;
  int shape_no = 0;
  for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 3, 33}, {130, 33, 7}, {65, 65, 127}}) {
    ++shape_no;
    for (int which = 0; which < 8; ++which) {
      const bool want_dx = which & 1, want_dw = which & 2, want_db = which & 4;
      const bool pass_x = want_dw || shape_no % 2 == 0;
      const Mat X = rand_mat(M, K, seed++), W = rand_mat(N, K, seed++), DY = rand_mat(M, N, seed++);
      const Mat DW0 = rand_mat(N, K, seed++), DB0 = rand_mat(1, N, seed++);
      const std::string what = fmt_case("linear_backward", {{"M", M}, {"K", K}, {"N", N}, {"dx", want_dx},
                                                            {"dW", want_dw}, {"db", want_db}, {"x", pass_x}});
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const View x = pass_x ? View(c.in(0, X)) : View{};
        const Arg w = c.in(1, W), dy = c.in(2, DY);
        Arg dx, dw, db;
        if (want_dx) dx = c.out(Mat(M, K, kNaN));
        if (want_dw) dw = c.out(DW0, false);  // the CPU accumulates dW contiguous
        if (want_db) db = c.out(DB0);
        ops::linear_backward(x, w, dy, dx, dw, db);
        Outs o;
        if (want_dx) o.r.push_back(dx.result("dx"));
        if (want_dw) o.r.push_back(dw.result("dW"));
        if (want_db) o.r.push_back(db.result("db"));
        return o;
      }, what);
      if (!on_cpu()) continue;
      size_t k = 0;
      if (want_dx) {
        DMat dx(M, K);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t kk = 0; kk < K; ++kk)
            for (int64_t n = 0; n < N; ++n) dx.at(i, kk) += double(DY.at(i, n)) * W.at(n, kk);
        expect_mat(ref.r[k++].m, dx, kReduce, what + " dx vs naive");
      }
      if (want_dw) {
        DMat dw(DW0);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t kk = 0; kk < K; ++kk)
            for (int64_t i = 0; i < M; ++i) dw.at(n, kk) += double(DY.at(i, n)) * X.at(i, kk);
        expect_mat(ref.r[k++].m, dw, kReduce, what + " dW vs naive");
      }
      if (want_db) {
        DMat db(DB0);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t i = 0; i < M; ++i) db.at(0, n) += DY.at(i, n);
        expect_mat(ref.r[k++].m, db, kReduce, what + " db vs naive");
      }
    }
  }
}

// ---- Norms -------------------------------------------------------------------------------------------------

DMat naive_layernorm(const DMat& x, const DMat& g, const DMat* b, double eps) {
  DMat y(x.rows, x.cols);
  for (int64_t r = 0; r < x.rows; ++r) {
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < x.cols; ++c) mean += x.at(r, c);
    mean /= double(x.cols);
    for (int64_t c = 0; c < x.cols; ++c) var += (x.at(r, c) - mean) * (x.at(r, c) - mean);
    var /= double(x.cols);
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t c = 0; c < x.cols; ++c)
      y.at(r, c) = (x.at(r, c) - mean) * rstd * g.v[size_t(c)] + (b ? b->v[size_t(c)] : 0.0);
  }
  return y;
}

DMat naive_rmsnorm(const DMat& x, const DMat& g, double eps) {
  DMat y(x.rows, x.cols);
  for (int64_t r = 0; r < x.rows; ++r) {
    double ss = 0.0;
    for (int64_t c = 0; c < x.cols; ++c) ss += x.at(r, c) * x.at(r, c);
    const double rstd = 1.0 / std::sqrt(ss / double(x.cols) + eps);
    for (int64_t c = 0; c < x.cols; ++c) y.at(r, c) = x.at(r, c) * rstd * g.v[size_t(c)];
  }
  return y;
}

// Row shapes for the norms. `special` rows: row 0 constant 0.5 (layernorm: zero variance, exact mean) or zero
// (rmsnorm); row 1 (where there is one) of values around 1e-3, whose variance or mean square is about eps.
// FD (naive backward) runs where rows * cols stays small.
struct NormShape {
  int64_t rows, cols;
  bool special, fd;
};
constexpr NormShape kNormShapes[] = {{1, 1, false, true},   {1, 7, true, true},    {3, 7, false, true},
                                     {67, 9, true, true},   {2, 65, false, true},  {130, 127, false, false},
                                     {5, 1000, true, false}};

Mat norm_input(const NormShape& s, uint32_t seed, float special_value) {
  Mat x = rand_mat(s.rows, s.cols, seed, -1.5f, 2.5f);  // a non-zero mean
  if (s.special)
    for (int64_t c = 0; c < s.cols; ++c) {
      x.at(0, c) = special_value;
      if (s.rows > 1) x.at(1, c) *= 1e-3f;
    }
  return x;
}

// Forward naive: double loops. Backward naive: central differences of the naive forward (loss <dy, y>) for dx,
// dg, db. Every combination of present gradients that matters; dx starts NaN, dg/db random (accumulated).
TEST_P(BackendOps, LayerNorm) {
  const float eps = 1e-5f;
  const Spec fwd{{true, false}, kElem}, bwd{{true, false}, kReduce};
  uint32_t seed = 400;
  for (const NormShape& s : kNormShapes) {
    const int64_t R = s.rows, C = s.cols;
    const Mat X = norm_input(s, seed++, 0.5f), G = rand_mat(1, C, seed++), Bv = rand_mat(1, C, seed++);
    for (bool bias : {false, true}) {
      const std::string what = fmt_case("layernorm", {{"rows", R}, {"C", C}, {"bias", bias}});
      const Outs ref = check_backends(dev(), fwd, [&](Ctx& c) {
        const Arg x = c.in(0, X), g = c.in(1, G);
        const View b = bias ? View(c.in(2, Bv)) : View{};
        const Arg y = c.out(Mat(R, C, kNaN));
        ops::layernorm(x, g, b, y, eps);
        return Outs{{y.result("y")}, {}};
      }, what);
      const DMat bd(Bv);
      if (on_cpu())
        expect_mat(ref.r[0].m, naive_layernorm(DMat(X), DMat(G), bias ? &bd : nullptr, eps), kElem,
                   what + " vs naive");
    }
    const Mat DY = rand_mat(R, C, seed++), DG0 = rand_mat(1, C, seed++), DB0 = rand_mat(1, C, seed++);
    for (int which : {7, 1, 6, 3}) {  // bits: dx, dg, db
      const bool want_dx = which & 1, want_dg = which & 2, want_db = which & 4;
      const std::string what = fmt_case("layernorm_backward", {{"rows", R}, {"C", C}, {"dx", want_dx},
                                                               {"dg", want_dg}, {"db", want_db}});
      const Outs ref = check_backends(dev(), bwd, [&](Ctx& c) {
        const Arg x = c.in(0, X), g = c.in(1, G), dy = c.in(2, DY);
        Arg dx, dg, db;
        if (want_dx) dx = c.out(Mat(R, C, kNaN));
        if (want_dg) dg = c.out(DG0);
        if (want_db) db = c.out(DB0);
        ops::layernorm_backward(x, g, dy, dx, dg, db, eps);
        Outs o;
        if (want_dx) o.r.push_back(dx.result("dx"));
        if (want_dg) o.r.push_back(dg.result("dg"));
        if (want_db) o.r.push_back(db.result("db"));
        return o;
      }, what);
      if (!on_cpu() || !s.fd) continue;
      DMat x(X), g(G), b(Bv);
      const DMat dy(DY);
      auto loss = [&] { return dot(dy, naive_layernorm(x, g, &b, eps)); };
      size_t k = 0;
      if (want_dx) expect_mat(ref.r[k++].m, central_diff(x, loss), kReduce, what + " dx vs finite differences");
      if (want_dg)
        expect_mat(ref.r[k++].m, plus(DG0, central_diff(g, loss)), kReduce, what + " dg vs finite differences");
      if (want_db)
        expect_mat(ref.r[k++].m, plus(DB0, central_diff(b, loss)), kReduce, what + " db vs finite differences");
    }
  }
}

// As LayerNorm; the special row is zero (y = 0; dx = dy g / sqrt(eps)).
TEST_P(BackendOps, RmsNorm) {
  const float eps = 1e-6f;
  const Spec fwd{{true, false}, kElem}, bwd{{true, false}, kReduce};
  uint32_t seed = 500;
  for (const NormShape& s : kNormShapes) {
    const int64_t R = s.rows, C = s.cols;
    const Mat X = norm_input(s, seed++, 0.0f), G = rand_mat(1, C, seed++);
    {
      const std::string what = fmt_case("rmsnorm", {{"rows", R}, {"C", C}});
      const Outs ref = check_backends(dev(), fwd, [&](Ctx& c) {
        const Arg x = c.in(0, X), g = c.in(1, G), y = c.out(Mat(R, C, kNaN));
        ops::rmsnorm(x, g, y, eps);
        return Outs{{y.result("y")}, {}};
      }, what);
      if (on_cpu()) expect_mat(ref.r[0].m, naive_rmsnorm(DMat(X), DMat(G), eps), kElem, what + " vs naive");
    }
    const Mat DY = rand_mat(R, C, seed++), DG0 = rand_mat(1, C, seed++);
    for (int which : {3, 1, 2}) {  // bits: dx, dg
      const bool want_dx = which & 1, want_dg = which & 2;
      const std::string what = fmt_case("rmsnorm_backward", {{"rows", R}, {"C", C}, {"dx", want_dx}, {"dg", want_dg}});
      const Outs ref = check_backends(dev(), bwd, [&](Ctx& c) {
        const Arg x = c.in(0, X), g = c.in(1, G), dy = c.in(2, DY);
        Arg dx, dg;
        if (want_dx) dx = c.out(Mat(R, C, kNaN));
        if (want_dg) dg = c.out(DG0);
        ops::rmsnorm_backward(x, g, dy, dx, dg, eps);
        Outs o;
        if (want_dx) o.r.push_back(dx.result("dx"));
        if (want_dg) o.r.push_back(dg.result("dg"));
        return o;
      }, what);
      if (!on_cpu() || !s.fd) continue;
      DMat x(X), g(G);
      const DMat dy(DY);
      auto loss = [&] { return dot(dy, naive_rmsnorm(x, g, eps)); };
      size_t k = 0;
      if (want_dx) expect_mat(ref.r[k++].m, central_diff(x, loss), kReduce, what + " dx vs finite differences");
      if (want_dg)
        expect_mat(ref.r[k++].m, plus(DG0, central_diff(g, loss)), kReduce, what + " dg vs finite differences");
    }
  }
}

// Naive: x / max(||x||, 1e-12) in double, including a zero row (stays zero) and a row of tiny values whose norm
// is below 1e-12 (divided by 1e-12).
TEST_P(BackendOps, L2Normalize) {
  const Spec spec{{false, false}, kElem};
  uint32_t seed = 600;
  for (auto [R, C] : {std::pair<int64_t, int64_t>{1, 1}, {4, 7}, {65, 33}, {3, 1000}}) {
    Mat X = rand_mat(R, C, seed++);
    if (R >= 4) {
      for (int64_t c = 0; c < C; ++c) X.at(1, c) = 0.0f, X.at(2, c) = (c % 2 ? 1e-14f : -3e-14f);
    }
    const std::string what = fmt_case("l2_normalize", {{"rows", R}, {"C", C}});
    const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg x = c.out(X);
      ops::l2_normalize(x);
      return Outs{{x.result("x")}, {}};
    }, what);
    if (!on_cpu()) continue;
    DMat want(X);
    for (int64_t r = 0; r < R; ++r) {
      double ss = 0.0;
      for (int64_t c = 0; c < C; ++c) ss += want.at(r, c) * want.at(r, c);
      const double n = std::max(std::sqrt(ss), 1e-12);
      for (int64_t c = 0; c < C; ++c) want.at(r, c) /= n;
    }
    expect_mat(ref.r[0].m, want, kElem, what + " vs naive");
    if (R >= 4) {
      for (int64_t c = 0; c < C; ++c) EXPECT_EQ(ref.r[0].m.at(1, c), 0.0f) << what << ": the zero row stays zero";
    }
  }
}

// ---- Activations ------------------------------------------------------------------------------------------

const ops::Act kActs[] = {ops::Act::gelu_erf, ops::Act::gelu_tanh, ops::Act::quick_gelu, ops::Act::silu};
const char* act_name(ops::Act a) {
  switch (a) {
    case ops::Act::gelu_erf: return "gelu_erf";
    case ops::Act::gelu_tanh: return "gelu_tanh";
    case ops::Act::quick_gelu: return "quick_gelu";
    case ops::Act::silu: return "silu";
  }
  return "?";
}

double naive_act(ops::Act a, double x) {
  switch (a) {
    case ops::Act::gelu_erf: return x * 0.5 * (1.0 + std::erf(x / std::sqrt(2.0)));
    case ops::Act::gelu_tanh: return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case ops::Act::quick_gelu: return x / (1.0 + std::exp(-1.702 * x));
    case ops::Act::silu: return x / (1.0 + std::exp(-x));
  }
  return 0.0;
}

double naive_act_grad(ops::Act a, double x) {  // central difference in double
  const double h = kFdStep * std::max(1.0, std::fabs(x));
  return (naive_act(a, x + h) - naive_act(a, x - h)) / (2.0 * h);
}

Mat act_input(int64_t R, int64_t C, uint32_t seed) {
  Mat x = rand_mat(R, C, seed, -6.0f, 6.0f);
  const float extremes[] = {0.0f, 20.0f, -20.0f, 90.0f, -90.0f, 1e-3f, -1e-3f};
  for (size_t i = 0; i < std::size(extremes) && i < x.v.size(); ++i) x.v[i * 3 % x.v.size()] = extremes[i];
  return x;
}

// Forward naive: the formulas of ops.h in double. Backward naive: dy times the central difference of the
// naive forward. dx aliasing dy must give the same as a separate dx.
TEST_P(BackendOps, Activation) {
  const Spec spec{{false, false}, kElem};
  uint32_t seed = 700;
  for (ops::Act a : kActs)
    for (auto [R, C] : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {1, 1000}}) {
      const Mat X = act_input(R, C, seed++), DY = rand_mat(R, C, seed++);
      std::string what = fmt_case(std::string("activation ") + act_name(a), {{"rows", R}, {"C", C}});
      Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg x = c.out(X);
        ops::activation(a, x);
        return Outs{{x.result("x")}, {}};
      }, what);
      DMat want(R, C), dwant(R, C);
      for (size_t i = 0; i < X.v.size(); ++i) {
        want.v[i] = naive_act(a, X.v[i]);
        dwant.v[i] = DY.v[i] * naive_act_grad(a, X.v[i]);
      }
      if (on_cpu()) expect_mat(ref.r[0].m, want, kElem, what + " vs naive");

      what = fmt_case(std::string("activation_backward ") + act_name(a), {{"rows", R}, {"C", C}});
      const Spec bspec{{false, false}, kActBackward};
      ref = check_backends(dev(), bspec, [&](Ctx& c) {
        const Arg x = c.in(0, X), dy = c.in(1, DY), dx = c.out(Mat(R, C, kNaN));
        ops::activation_backward(a, x, dy, dx);
        return Outs{{dx.result("dx")}, {}};
      }, what);
      const Outs alias = check_backends(dev(), bspec, [&](Ctx& c) {
        const Arg x = c.in(0, X), d = c.out(DY);
        ops::activation_backward(a, x, d, d);
        return Outs{{d.result("dx (= dy)")}, {}};
      }, what + " (dx aliasing dy)");
      if (!on_cpu()) continue;
      expect_mat(ref.r[0].m, dwant, kActBackward, what + " vs finite differences");
      expect_mat(alias.r[0].m, ref.r[0].m, kExact, what + " aliased vs separate dx");
    }
}

DMat naive_swiglu(const DMat& gu) {
  const int64_t I = gu.cols / 2;
  DMat o(gu.rows, I);
  for (int64_t r = 0; r < gu.rows; ++r)
    for (int64_t i = 0; i < I; ++i) o.at(r, i) = naive_act(ops::Act::silu, gu.at(r, i)) * gu.at(r, I + i);
  return o;
}

// Forward naive: silu(gate) * up in double. Backward naive: central differences of the naive forward.
TEST_P(BackendOps, Swiglu) {
  const Spec spec{{false, false}, kElem};
  uint32_t seed = 800;
  for (auto [R, I] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {65, 33}}) {
    const Mat GU = rand_mat(R, 2 * I, seed++, -5.0f, 5.0f), DO = rand_mat(R, I, seed++);
    std::string what = fmt_case("swiglu", {{"rows", R}, {"I", I}});
    Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg gu = c.in(0, GU), o = c.out(Mat(R, I, kNaN));
      ops::swiglu(gu, o);
      return Outs{{o.result("out")}, {}};
    }, what);
    if (on_cpu()) expect_mat(ref.r[0].m, naive_swiglu(DMat(GU)), kElem, what + " vs naive");
    what = fmt_case("swiglu_backward", {{"rows", R}, {"I", I}});
    ref = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg gu = c.in(0, GU), d = c.in(1, DO), dgu = c.out(Mat(R, 2 * I, kNaN));
      ops::swiglu_backward(gu, d, dgu);
      return Outs{{dgu.result("dgate_up")}, {}};
    }, what);
    if (!on_cpu()) continue;
    DMat gu(GU);
    const DMat d(DO);
    expect_mat(ref.r[0].m, central_diff(gu, [&] { return dot(d, naive_swiglu(gu)); }), kElem,
               what + " vs finite differences");
  }
}

// ---- Elementwise --------------------------------------------------------------------------------------------

// Naive: one correctly rounded f32 operation per element (computed in double, rounded once): exact.
TEST_P(BackendOps, Elementwise) {
  const Spec spec{{true, true}, kElem};
  uint32_t seed = 900;
  for (auto [R, C] : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {65, 127}}) {
    const Mat Y = rand_mat(R, C, seed++), X = rand_mat(R, C, seed++);
    std::string what = fmt_case("add", {{"rows", R}, {"C", C}});
    Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg x = c.in(0, X), y = c.out(Y);
      ops::add(y, x);
      return Outs{{y.result("y")}, {}};
    }, what);
    DMat want(R, C);
    for (size_t i = 0; i < want.v.size(); ++i) want.v[i] = double(Y.v[i]) + double(X.v[i]);
    if (on_cpu()) expect_mat(ref.r[0].m, want, kExact, what + " vs naive");

    for (float alpha : {-0.37f, 0.0f, 3.0f}) {
      what = fmt_case("scale", {{"rows", R}, {"C", C}}) + " alpha=" + std::to_string(alpha);
      ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg x = c.out(X);
        ops::scale(x, alpha);
        return Outs{{x.result("x")}, {}};
      }, what);
      for (size_t i = 0; i < want.v.size(); ++i) want.v[i] = double(X.v[i]) * double(alpha);
      if (on_cpu()) expect_mat(ref.r[0].m, want, kExact, what + " vs naive");
    }
  }
  // add_rows: period 1 (a bias), period T (a position table over a batch), a period that does not divide rows.
  for (auto [R, C, P] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {21, 33, 1}, {21, 33, 7}, {7, 5, 3},
                         {130, 65, 65}}) {
    const Mat X = rand_mat(R, C, seed++), S = rand_mat(P, C, seed++);
    const std::string what = fmt_case("add_rows", {{"rows", R}, {"C", C}, {"src rows", P}});
    const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg s = c.in(0, S), x = c.out(X);
      ops::add_rows(x, s);
      return Outs{{x.result("x")}, {}};
    }, what);
    DMat want(R, C);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t cc = 0; cc < C; ++cc) want.at(r, cc) = double(X.at(r, cc)) + double(S.at(r % P, cc));
    if (on_cpu()) expect_mat(ref.r[0].m, want, kExact, what + " vs naive");
  }
}

// ---- Rows: gather, copy, scatter, im2col ---------------------------------------------------------------------

// Data movement: exact on every backend; naive: the row table of ops.h.
TEST_P(BackendOps, GatherRows) {
  const Spec spec{{true, true}, kExact, true};
  uint32_t seed = 1000;
  struct Case {
    std::vector<int32_t> idx;
    bool with_b;
  };
  const Case cases[] = {{{0, 4, -1, 2, -3, 0, 4, -2}, true}, {{3, 0, 3}, false}, {{-2}, true}, {{1}, false}};
  for (int64_t C : {1, 33, 65})
    for (const Case& k : cases) {
      const int64_t n = int64_t(k.idx.size());
      const Mat A = rand_mat(5, C, seed++), Bm = rand_mat(3, C, seed++);
      const std::string what = fmt_case("gather_rows", {{"C", C}, {"n", n}, {"b", k.with_b}});
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg a = c.in(0, A);
        const View b = k.with_b ? View(c.in(1, Bm)) : View{};
        const View idx = c.index(k.idx);
        const Arg o = c.out(Mat(n, C, kNaN));
        ops::gather_rows(a, b, idx, o);
        return Outs{{o.result("out")}, {}};
      }, what);
      if (!on_cpu()) continue;
      Mat want(n, C);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t cc = 0; cc < C; ++cc) {
          const int32_t j = k.idx[size_t(i)];
          want.at(i, cc) = j >= 0 ? A.at(j, cc) : Bm.at(-1 - j, cc);
        }
      expect_mat(ref.r[0].m, want, kExact, what + " vs naive");
    }
}

// Data movement: exact; dst rows not named (and rows of skipped, negative indices) are untouched.
TEST_P(BackendOps, CopyRows) {
  const Spec spec{{true, true}, kExact, true};
  uint32_t seed = 1100;
  const std::vector<std::vector<int32_t>> cases{{4, -1, 0, 8, -5, 2}, {0}, {-1}, {8, 7, 6, 5, 4, 3, 2, 1, 0}};
  for (int64_t C : {1, 33, 130})
    for (const auto& idx : cases) {
      const int64_t n = int64_t(idx.size());
      const Mat S = rand_mat(n, C, seed++), D0 = rand_mat(9, C, seed++);
      const std::string what = fmt_case("copy_rows", {{"C", C}, {"n", n}});
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg s = c.in(0, S), d = c.out(D0);
        ops::copy_rows(s, c.index(idx), d);
        return Outs{{d.result("dst")}, {}};
      }, what);
      if (!on_cpu()) continue;
      Mat want = D0;
      for (int64_t i = 0; i < n; ++i)
        if (idx[size_t(i)] >= 0)
          for (int64_t cc = 0; cc < C; ++cc) want.at(idx[size_t(i)], cc) = S.at(i, cc);
      expect_mat(ref.r[0].m, want, kExact, what + " vs naive");
    }
}

// Naive: a sequential f32 sum in the order of i, exactly (ops.h fixes the order). Repeated destinations, rows
// of very different magnitudes (so that the order shows), a or b absent, C over 64 (the CPU's column chunks).
TEST_P(BackendOps, ScatterAddRows) {
  const Spec spec{{true, true}, Tol{0.0, 0.0, true}, false, 4};
  uint32_t seed = 1200;
  const std::vector<int32_t> idx{2, -1, 0, 2, -3, 2, -1, 0, 1, -1};
  for (int64_t C : {1, 65, 130})
    for (int which : {3, 1, 2}) {  // bits: a, b
      const bool with_a = which & 1, with_b = which & 2;
      const int64_t n = int64_t(idx.size());
      Mat S = rand_mat(n, C, seed++);
      const float mags[] = {1e4f, 1.0f, -1e4f, 0.3f, 3e3f};  // large enough for the order to show in f32, finite in f16
      for (int64_t i = 0; i < n; ++i)
        for (int64_t cc = 0; cc < C; ++cc) S.at(i, cc) *= mags[(i + cc) % 5];
      const Mat A0 = rand_mat(3, C, seed++), B0 = rand_mat(3, C, seed++);
      const std::string what = fmt_case("scatter_add_rows", {{"C", C}, {"a", with_a}, {"b", with_b}});
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg s = c.in(0, S);
        const View ix = c.index(idx);
        Arg a, b;
        if (with_a) a = c.out(A0);
        if (with_b) b = c.out(B0);
        ops::scatter_add_rows(s, ix, a, b);
        Outs o;
        if (with_a) o.r.push_back(a.result("a"));
        if (with_b) o.r.push_back(b.result("b"));
        return o;
      }, what);
      if (!on_cpu()) continue;
      Mat wa = A0, wb = B0;
      for (int64_t i = 0; i < n; ++i) {
        const int32_t j = idx[size_t(i)];
        Mat* t = j >= 0 ? &wa : &wb;
        const int64_t row = j >= 0 ? j : -1 - j;
        for (int64_t cc = 0; cc < C; ++cc) {
          volatile float sum = t->at(row, cc) + S.at(i, cc);  // one f32 addition at a time, in order
          t->at(row, cc) = sum;
        }
      }
      size_t k = 0;
      if (with_a) expect_mat(ref.r[k++].m, wa, kExact, what + " a vs sequential f32 sum");
      if (with_b) expect_mat(ref.r[k++].m, wb, kExact, what + " b vs sequential f32 sum");
    }
}

// Data movement: exact; naive: cols[(n, gy, gx), (c, ky, kx)] = pixels[n, c, gy P + ky, gx P + kx].
TEST_P(BackendOps, Im2colPatches) {
  const Spec spec{{false, false}, kExact, true};
  uint32_t seed = 1300;
  for (auto [N, CH, S, P] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{2, 3, 6, 3}, {1, 1, 7, 7},
                             {1, 2, 4, 1}, {3, 3, 10, 5}}) {
    const int64_t G = S / P;
    const Mat PX = rand_mat(N * CH * S, S, seed++);
    const std::string what = fmt_case("im2col_patches", {{"N", N}, {"CH", CH}, {"S", S}, {"P", P}});
    const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg px = c.in(0, PX), cols = c.out(Mat(N * G * G, CH * P * P, kNaN));
      ops::im2col_patches(px, N, CH, S, P, cols);
      return Outs{{cols.result("cols")}, {}};
    }, what);
    if (!on_cpu()) continue;
    Mat want(N * G * G, CH * P * P);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t gy = 0; gy < G; ++gy)
        for (int64_t gx = 0; gx < G; ++gx)
          for (int64_t ch = 0; ch < CH; ++ch)
            for (int64_t ky = 0; ky < P; ++ky)
              for (int64_t kx = 0; kx < P; ++kx)
                want.at((n * G + gy) * G + gx, (ch * P + ky) * P + kx) =
                    PX.at((n * CH + ch) * S + gy * P + ky, gx * P + kx);
    expect_mat(ref.r[0].m, want, kExact, what + " vs naive");
  }
}

// ---- Positions ------------------------------------------------------------------------------------------

// Naive: inv_freq, angle, cos and sin in double. ops.h does not fix the precision of the angle and the CPU forms
// it in f32 (as torch does): its relative error is about 14 f32 roundings (2^-24 each; the exponent's rounding
// is magnified by ln(base)), so cos/sin may differ by mscale * (32 * 2^-24 * |angle| + 2^-23); the same
// tolerance holds CUDA against the CPU. The two halves of each row must be identical.
TEST_P(BackendOps, RopeTables) {
  uint32_t seed = 1400;
  struct Case {
    int64_t T, rot;
    double base;
    bool ext;
    float mscale;
  };
  for (const Case& k : {Case{1, 2, 10000.0, false, 1.0f}, Case{7, 8, 10000.0, false, 1.0f},
                        Case{65, 32, 10000.0, false, 1.0f}, Case{33, 16, 10000.0, true, 1.1902381f},
                        Case{127, 6, 500000.0, true, 0.9f}}) {
    std::vector<float> ext;
    if (k.ext) {
      const Mat e = rand_mat(1, k.rot / 2 + 1, seed++, 1.0f, 4.0f);  // more factors than needed is allowed
      ext = e.v;
    }
    const double min_ext = k.ext ? *std::min_element(ext.begin(), ext.begin() + k.rot / 2) : 1.0;
    const double max_angle = double(k.T - 1) / min_ext;
    const Tol tol{0.0, k.mscale * (32.0 * 0x1p-24 * max_angle + 0x1p-23), false};
    const Spec spec{{false, false}, tol};
    const std::string what = fmt_case("rope_tables", {{"T", k.T}, {"rot_dim", k.rot}, {"ext", k.ext}}) +
                             " mscale=" + std::to_string(k.mscale);
    const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg cs = c.out(Mat(k.T, k.rot, kNaN)), sn = c.out(Mat(k.T, k.rot, kNaN));
      ops::rope_tables(k.base, ext, k.mscale, cs, sn);
      return Outs{{cs.result("cos"), sn.result("sin")}, {}};
    }, what);
    if (!on_cpu()) continue;
    DMat wc(k.T, k.rot), ws(k.T, k.rot);
    const int64_t half = k.rot / 2;
    for (int64_t t = 0; t < k.T; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const double inv = 1.0 / ((k.ext ? ext[size_t(i)] : 1.0) * std::pow(k.base, double(2 * i) / double(k.rot)));
        const double a = double(t) * inv;
        wc.at(t, i) = wc.at(t, i + half) = std::cos(a) * k.mscale;
        ws.at(t, i) = ws.at(t, i + half) = std::sin(a) * k.mscale;
      }
    expect_mat(ref.r[0].m, wc, tol, what + " cos vs naive");
    expect_mat(ref.r[1].m, ws, tol, what + " sin vs naive");
    for (int64_t t = 0; t < k.T; ++t)
      for (int64_t i = 0; i < half; ++i) {
        EXPECT_TRUE(same_value(ref.r[0].m.at(t, i), ref.r[0].m.at(t, i + half))) << what << " cos halves at " << t;
        EXPECT_TRUE(same_value(ref.r[1].m.at(t, i), ref.r[1].m.at(t, i + half))) << what << " sin halves at " << t;
      }
  }
}

DMat naive_rope(const Mat& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot, const Mat& cs, const Mat& sn) {
  DMat y(x);
  const int64_t half = rot / 2;
  for (int64_t r = 0; r < B * T; ++r) {
    const int64_t t = r % T;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const double x1 = x.at(r, h * D + i), x2 = x.at(r, h * D + i + half);
        // x cos + rotate_half(x) sin, rotate_half(x) = [-x2, x1]
        y.at(r, h * D + i) = x1 * cs.at(t, i) - x2 * sn.at(t, i);
        y.at(r, h * D + i + half) = x2 * cs.at(t, i + half) + x1 * sn.at(t, i + half);
      }
  }
  return y;
}

// Forward naive: the rotate_half formula in double, with random tables (the halves differ, so the indexing of
// each half shows) and with rope_tables' (ext factors, mscale); partial rotation (rot_dim < D); columns past
// H*D untouched. Backward naive: the adjoint, <rope(x), y> == <x, rope_backward(y)> in double; and with
// rope_tables' tables rope_backward(rope(x)) == mscale^2 x on the rotated dims (a rotation), x elsewhere.
TEST_P(BackendOps, Rope) {
  const Spec spec{{true, true}, kElem};
  uint32_t seed = 1500;
  struct Case {
    int64_t B, T, H, D, rot, extra_cols;
    bool tables;  // from rope_tables (else random)
  };
  for (const Case& k : {Case{2, 5, 3, 8, 8, 0, false}, Case{1, 7, 2, 6, 4, 5, false}, Case{3, 1, 1, 2, 2, 0, true},
                        Case{2, 33, 4, 16, 16, 0, true}, Case{1, 65, 2, 10, 6, 3, true}}) {
    const int64_t R = k.B * k.T, W = k.H * k.D + k.extra_cols;
    Mat CS = rand_mat(k.T, k.rot, seed++, -1.0f, 1.0f), SN = rand_mat(k.T, k.rot, seed++, -1.0f, 1.0f);
    const float mscale = 1.25f;
    if (k.tables) {
      Tensor c({k.T, k.rot}), s({k.T, k.rot});
      const Mat e = rand_mat(1, k.rot / 2, seed++, 1.0f, 2.0f);
      ops::rope_tables(10000.0, e.v, mscale, c.view(), s.view());
      CS.v = c.to_vector(), SN.v = s.to_vector();
    }
    const Mat X = rand_mat(R, W, seed++), Y = rand_mat(R, W, seed++);
    std::string what = fmt_case("rope", {{"B", k.B}, {"T", k.T}, {"H", k.H}, {"D", k.D}, {"rot_dim", k.rot},
                                         {"extra cols", k.extra_cols}, {"rope_tables", k.tables}});
    const Outs fwd = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg cs = c.in(0, CS), sn = c.in(1, SN), x = c.out(X);
      ops::rope(x, k.B, k.T, k.H, k.D, k.rot, cs, sn);
      return Outs{{x.result("x")}, {}};
    }, what);
    if (on_cpu()) expect_mat(fwd.r[0].m, naive_rope(X, k.B, k.T, k.H, k.D, k.rot, CS, SN), kElem, what + " vs naive");

    what = "rope_backward" + what.substr(4);
    const Outs bwd = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg cs = c.in(0, CS), sn = c.in(1, SN), dx = c.out(Y);
      ops::rope_backward(dx, k.B, k.T, k.H, k.D, k.rot, cs, sn);
      return Outs{{dx.result("dx")}, {}};
    }, what);
    if (!on_cpu()) continue;
    double lhs = 0.0, rhs = 0.0, mag = 0.0;
    for (size_t i = 0; i < X.v.size(); ++i) {
      lhs += double(fwd.r[0].m.v[i]) * Y.v[i];
      rhs += double(X.v[i]) * bwd.r[0].m.v[i];
      mag += std::fabs(double(fwd.r[0].m.v[i]) * Y.v[i]) + std::fabs(double(X.v[i]) * bwd.r[0].m.v[i]);
    }
    EXPECT_NEAR(lhs, rhs, 1e-6 * mag) << what << ": <rope(x), y> vs <x, rope_backward(y)>";
    if (k.tables) {
      Tensor x = Tensor::from_vector({R, W}, X.v), c = Tensor::from_vector({k.T, k.rot}, CS.v),
             s = Tensor::from_vector({k.T, k.rot}, SN.v);
      ops::rope(x.view(), k.B, k.T, k.H, k.D, k.rot, c.view(), s.view());
      ops::rope_backward(x.view(), k.B, k.T, k.H, k.D, k.rot, c.view(), s.view());
      Mat got(R, W);
      got.v = x.to_vector();
      DMat want(X);
      for (int64_t r = 0; r < R; ++r)
        for (int64_t h = 0; h < k.H; ++h)
          for (int64_t i = 0; i < k.rot; ++i) want.at(r, h * k.D + i) *= double(mscale) * mscale;
      expect_mat(got, want, kElem, what + ": rope_backward(rope(x)) == mscale^2 x");
    }
  }
}

// ---- Attention ------------------------------------------------------------------------------------------

struct AttnCase {
  int64_t B, T, Hq, Hkv, D;
  int mask;  // 0 none; 1 padding (batch b masks its last 2b + 1 keys, 6 more when T >= 64); 2 the last batch
             // fully masked (the others their last key); 3 the first two keys of every batch masked (causal:
             // query rows 0 and 1 see no key)
  bool causal;
  float scale;  // 0: 1/sqrt(D)
};
constexpr AttnCase kAttnCases[] = {
    {2, 5, 4, 2, 3, 1, false, 0.0f},  {2, 5, 4, 2, 3, 1, true, 0.0f},    {2, 5, 2, 1, 4, 2, false, 0.0f},
    {1, 6, 2, 2, 3, 3, true, 0.0f},   {3, 1, 2, 1, 1, 0, true, 0.0f},    {1, 130, 4, 2, 8, 1, true, 0.0f},
    {2, 65, 3, 3, 16, 0, false, 0.7f}, {1, 127, 2, 1, 33, 1, false, 0.0f}, {2, 70, 6, 2, 5, 2, true, 0.0f},
    // The head dims of the CUDA flash kernels (taken for bf16 q/k/v): tiles of 64 queries and keys, 32-row
    // backward steps, partial last tiles, GQA, every mask.
    {2, 70, 4, 2, 64, 1, true, 0.0f},  {1, 130, 2, 1, 32, 3, true, 0.0f},  {1, 65, 2, 2, 96, 2, false, 0.0f},
    {1, 40, 2, 1, 128, 0, false, 0.0f}, {2, 33, 2, 2, 64, 3, false, 0.0f},
};

Mat attn_mask(const AttnCase& k) {
  Mat m(k.B, k.T, 1.0f);
  for (int64_t b = 0; b < k.B; ++b)
    for (int64_t t = 0; t < k.T; ++t) {
      const int64_t pad = std::min(k.T - 1, 2 * b + 1 + (k.T >= 64 ? 6 : 0));
      if (k.mask == 1 && t >= k.T - pad) m.at(b, t) = 0.0f;
      if (k.mask == 2 && (b == k.B - 1 || t >= k.T - 1)) m.at(b, t) = 0.0f;
      if (k.mask == 3 && t < 2) m.at(b, t) = 0.0f;
    }
  return m;
}

bool key_allowed(const AttnCase& k, const Mat& mask, int64_t b, int64_t i, int64_t j) {
  return (!k.causal || j <= i) && (k.mask == 0 || mask.at(b, j) != 0.0f);
}

bool query_fully_masked(const AttnCase& k, const Mat& mask, int64_t b, int64_t i) {
  for (int64_t j = 0; j < k.T; ++j)
    if (key_allowed(k, mask, b, i, j)) return false;
  return true;
}

float attn_scale(const AttnCase& k) { return k.scale != 0.0f ? k.scale : 1.0f / std::sqrt(float(k.D)); }

DMat naive_attention(const AttnCase& k, const Mat& mask, const DMat& q, const DMat& kk, const DMat& v) {
  const int64_t group = k.Hq / k.Hkv;
  const double scale = attn_scale(k);
  DMat o(k.B * k.T, k.Hq * k.D);
  std::vector<double> s(size_t(k.T));
  for (int64_t b = 0; b < k.B; ++b)
    for (int64_t h = 0; h < k.Hq; ++h)
      for (int64_t i = 0; i < k.T; ++i) {
        const int64_t hk = h / group, qi = b * k.T + i;
        double mx = -INFINITY;
        for (int64_t j = 0; j < k.T; ++j) {
          s[size_t(j)] = -INFINITY;
          if (!key_allowed(k, mask, b, i, j)) continue;
          double acc = 0.0;
          for (int64_t d = 0; d < k.D; ++d) acc += q.at(qi, h * k.D + d) * kk.at(b * k.T + j, hk * k.D + d);
          s[size_t(j)] = acc * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        if (mx == -INFINITY) continue;  // every key masked: zeros
        double z = 0.0;
        for (double& x : s) z += (x = x == -INFINITY ? 0.0 : std::exp(x - mx));
        for (int64_t j = 0; j < k.T; ++j) {
          if (s[size_t(j)] == 0.0) continue;
          for (int64_t d = 0; d < k.D; ++d) o.at(qi, h * k.D + d) += s[size_t(j)] / z * v.at(b * k.T + j, hk * k.D + d);
        }
      }
  return o;
}

std::string attn_what(const char* op, const AttnCase& k) {
  return fmt_case(op, {{"B", k.B}, {"T", k.T}, {"Hq", k.Hq}, {"Hkv", k.Hkv}, {"D", k.D}, {"mask", k.mask},
                       {"causal", k.causal}});
}

// Naive: softmax attention in double from ops.h (mask, causal, GQA; fully masked query rows give zeros, exactly
// zeros on the CPU). In the strided variant q, k, v are column blocks of one fused buffer and o a block of a
// wider one. T = 130, 65, 127, 70 cross the CPU's 64-row blocks.
TEST_P(BackendOps, Attention) {
  const Spec spec{{true, true}, kReduce, false, 1, 0.0, 2};
  uint32_t seed = 1600;
  for (const AttnCase& k : kAttnCases) {
    const int64_t R = k.B * k.T;
    const Mat Q = rand_mat(R, k.Hq * k.D, seed++), K = rand_mat(R, k.Hkv * k.D, seed++),
              V = rand_mat(R, k.Hkv * k.D, seed++), M = attn_mask(k);
    const std::string what = attn_what("attention", k);
    const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
      const std::vector<Arg> qkv = c.fused_in(0, {&Q, &K, &V});
      const Arg o = c.out(Mat(R, k.Hq * k.D, kNaN));
      const Arg lse = c.out_as(Mat(k.B * k.Hq, k.T, kNaN), DType::F32);
      ops::AttentionParams p;
      p.q = qkv[0], p.k = qkv[1], p.v = qkv[2], p.o = o, p.lse = lse;
      p.B = k.B, p.T = k.T, p.Hq = k.Hq, p.Hkv = k.Hkv, p.D = k.D, p.causal = k.causal, p.scale = attn_scale(k);
      if (k.mask) p.key_mask = c.fixed(M, DType::F32);
      ops::attention(p);
      return Outs{{o.result("o"), lse.result("lse")}, {}};
    }, what);
    if (!on_cpu()) continue;
    expect_mat(ref.r[0].m, naive_attention(k, M, DMat(Q), DMat(K), DMat(V)), kReduce, what + " vs naive");
    for (int64_t b = 0; b < k.B; ++b)
      for (int64_t i = 0; i < k.T; ++i)
        if (query_fully_masked(k, M, b, i)) {
          for (int64_t c = 0; c < k.Hq * k.D; ++c)
            ASSERT_EQ(ref.r[0].m.at(b * k.T + i, c), 0.0f) << what << ": fully masked query row " << b * k.T + i;
        }
  }
}

// Elements for the finite differences: all of a small operand; for a large one, some columns of the rows around
// the CPU's 64-row block boundaries and the ends of each batch.
std::vector<size_t> fd_sample(const DMat& x, int64_t T) {
  if (x.v.size() <= 400) return {};  // all
  std::vector<size_t> at;
  for (int64_t r : {int64_t(0), int64_t(1), int64_t(62), int64_t(63), int64_t(64), int64_t(65), T - 2, T - 1, T,
                    T + 64, 2 * T - 1})
    if (r >= 0 && r < x.rows)
      for (int64_t c : {int64_t(0), x.cols / 2, x.cols - 1}) at.push_back(size_t(r * x.cols + c));
  std::sort(at.begin(), at.end());
  at.erase(std::unique(at.begin(), at.end()), at.end());
  return at;
}

// Naive: central differences of the naive forward (loss <dout, o>), every element of small cases, the rows
// around block boundaries of large ones. dq, dk, dv start NaN (overwritten); in the strided variant they are
// column blocks of one dqkv buffer. Fully masked query rows get exactly zero dq on the CPU.
TEST_P(BackendOps, AttentionBackward) {
  const Spec spec{{true, true}, kReduce, false, 1, 0.0, 8};
  uint32_t seed = 1700;
  for (const AttnCase& k : kAttnCases) {
    const int64_t R = k.B * k.T;
    const Mat Q = rand_mat(R, k.Hq * k.D, seed++), K = rand_mat(R, k.Hkv * k.D, seed++),
              V = rand_mat(R, k.Hkv * k.D, seed++), M = attn_mask(k), DO = rand_mat(R, k.Hq * k.D, seed++);
    const Mat NQ(R, k.Hq * k.D, kNaN), NKV(R, k.Hkv * k.D, kNaN);
    // mode 0: the backward alone; 1: given the forward's o and lse (the CUDA flash kernels reuse them, the CPU
    // recomputes); 2: deterministic = false (CUDA's flash kernels add dq atomically)
    for (auto [which, mode] : {std::pair{7, 0}, {1, 0}, {6, 0}, {4, 0}, {7, 1}, {7, 2}}) {  // bits: dq, dk, dv
      const bool want_dq = which & 1, want_dk = which & 2, want_dv = which & 4;
      const std::string what = attn_what("attention_backward", k) +
                               fmt_case("", {{"dq", want_dq}, {"dk", want_dk}, {"dv", want_dv}, {"mode", mode}});
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const std::vector<Arg> qkv = c.fused_in(0, {&Q, &K, &V});
        std::vector<const Mat*> grads;
        if (want_dq) grads.push_back(&NQ);
        if (want_dk) grads.push_back(&NKV);
        if (want_dv) grads.push_back(&NKV);
        const std::vector<Arg> g = c.fused_out(grads);
        ops::AttentionBackwardParams p;
        p.fwd.q = qkv[0], p.fwd.k = qkv[1], p.fwd.v = qkv[2];
        p.fwd.B = k.B, p.fwd.T = k.T, p.fwd.Hq = k.Hq, p.fwd.Hkv = k.Hkv, p.fwd.D = k.D;
        p.fwd.causal = k.causal, p.fwd.scale = attn_scale(k);
        if (k.mask) p.fwd.key_mask = c.fixed(M, DType::F32);
        p.dout = c.in(1, DO);
        p.deterministic = mode != 2;
        if (mode == 1) {
          p.fwd.o = c.out(Mat(R, k.Hq * k.D, kNaN));
          p.fwd.lse = c.out_as(Mat(k.B * k.Hq, k.T, kNaN), DType::F32);
          ops::attention(p.fwd);
        }
        size_t n = 0;
        if (want_dq) p.dq = g[n++];
        if (want_dk) p.dk = g[n++];
        if (want_dv) p.dv = g[n++];
        ops::attention_backward(p);
        Outs o;
        n = 0;
        if (want_dq) o.r.push_back(g[n++].result("dq"));
        if (want_dk) o.r.push_back(g[n++].result("dk"));
        if (want_dv) o.r.push_back(g[n++].result("dv"));
        return o;
      }, what);
      if (!on_cpu() || mode != 0) continue;
      DMat q(Q), kk(K), v(V);
      const DMat dout(DO);
      auto loss = [&] { return dot(dout, naive_attention(k, M, q, kk, v)); };
      size_t n = 0;
      for (DMat* x : {&q, &kk, &v}) {
        const bool wanted = x == &q ? want_dq : x == &kk ? want_dk : want_dv;
        if (!wanted) continue;
        const std::vector<size_t> at = fd_sample(*x, k.T);
        const DMat fd = central_diff(*x, loss, at);
        const char* name = x == &q ? " dq" : x == &kk ? " dk" : " dv";
        expect_mat(ref.r[n].m, fd, kReduce, what + name + " vs finite differences", at.empty() ? nullptr : &at);
        if (x == &q)
          for (int64_t b = 0; b < k.B; ++b)
            for (int64_t i = 0; i < k.T; ++i)
              if (query_fully_masked(k, M, b, i)) {
                for (int64_t c = 0; c < k.Hq * k.D; ++c)
                  ASSERT_EQ(ref.r[n].m.at(b * k.T + i, c), 0.0f) << what << ": fully masked query row " << b * k.T + i;
              }
        ++n;
      }
    }
  }
}

// ---- Pooling ---------------------------------------------------------------------------------------------

DMat naive_masked_mean(const DMat& x, const Mat& mask, int64_t B, int64_t T) {
  DMat o(B, x.cols);
  for (int64_t b = 0; b < B; ++b) {
    double n = 0.0;
    for (int64_t t = 0; t < T; ++t) n += mask.at(b, t);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < x.cols; ++c) o.at(b, c) += x.at(b * T + t, c) * mask.at(b, t);
    for (int64_t c = 0; c < x.cols; ++c) o.at(b, c) /= std::max(n, 1e-9);
  }
  return o;
}

// Forward naive: the weighted mean in double (mask weights 1, 0.5 and 0; a row with every weight 0 gives
// zeros). Backward naive: central differences of the naive forward (zero rows where the mask is 0).
TEST_P(BackendOps, MaskedMeanRows) {
  const Spec fwd{{true, false}, kReduce}, bwd{{true, false}, kElem};
  uint32_t seed = 1800;
  for (auto [B, T, C] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 5, 7}, {2, 65, 33}, {4, 130, 3}}) {
    Mat M(B, T, 1.0f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        if (t >= T - b) M.at(b, t) = 0.0f;       // padding
        if (t == 1 && b == 1) M.at(b, t) = 0.5f;  // a weight
        if (b == 2) M.at(b, t) = 0.0f;            // nothing to pool
      }
    const Mat X = rand_mat(B * T, C, seed++), DO = rand_mat(B, C, seed++);
    std::string what = fmt_case("masked_mean_rows", {{"B", B}, {"T", T}, {"C", C}});
    Outs ref = check_backends(dev(), fwd, [&](Ctx& c) {
      const Arg x = c.in(0, X), o = c.out(Mat(B, C, kNaN));
      ops::masked_mean_rows(x, c.fixed(M, DType::F32), B, T, o);
      return Outs{{o.result("out")}, {}};
    }, what);
    if (on_cpu()) expect_mat(ref.r[0].m, naive_masked_mean(DMat(X), M, B, T), kReduce, what + " vs naive");
    what = fmt_case("masked_mean_rows_backward", {{"B", B}, {"T", T}, {"C", C}});
    ref = check_backends(dev(), bwd, [&](Ctx& c) {
      const Arg d = c.in(0, DO), dx = c.out(Mat(B * T, C, kNaN));
      ops::masked_mean_rows_backward(d, c.fixed(M, DType::F32), B, T, dx);
      return Outs{{dx.result("dx")}, {}};
    }, what);
    if (!on_cpu()) continue;
    DMat x(X);
    const DMat dout(DO);
    expect_mat(ref.r[0].m, central_diff(x, [&] { return dot(dout, naive_masked_mean(x, M, B, T)); }), kElem,
               what + " vs finite differences");
  }
}

// ---- LoRA dropout ------------------------------------------------------------------------------------------

// The mask is data: identical on every backend (x is bounded away from zero, so a kept element can never pass
// for a dropped one within the value tolerance). Naive: out is 0 or x / (1 - p); p = 0 keeps x exactly; the
// fraction kept is within 6 sigma of 1 - p; dropout_backward_add uses the same mask and adds din / (1 - p);
// the mask is a function of (seed, i) only: the same in another shape and at another thread count, another
// one for another seed.
TEST_P(BackendOps, Dropout) {
  const Spec spec{{false, false}, kElem};
  uint32_t seed = 1900;
  struct Case {
    int64_t rows, cols;
    float p;
    uint64_t seed;
  };
  for (const Case& k : {Case{1, 1, 0.5f, 7}, Case{7, 33, 0.1f, 8}, Case{100, 200, 0.3f, 9}, Case{5, 9, 0.0f, 10},
                        Case{1, 4096, 0.9f, 11}}) {
    Mat X = rand_mat(k.rows, k.cols, seed++, 0.5f, 2.0f);
    for (size_t i = 0; i < X.v.size(); i += 2) X.v[i] = -X.v[i];
    const Mat DIN = rand_mat(k.rows, k.cols, seed++, 0.5f, 2.0f), DX0 = rand_mat(k.rows, k.cols, seed++);
    std::string what = fmt_case("dropout", {{"rows", k.rows}, {"cols", k.cols}}) + " p=" + std::to_string(k.p);
    const Outs fwd = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg x = c.in(0, X), o = c.out(Mat(k.rows, k.cols, kNaN));
      ops::dropout(x, k.seed, k.p, o);
      return Outs{{o.result("out")}, {}};
    }, what);
    const std::string bwhat = "dropout_backward_add" + what.substr(7);
    const Outs bwd = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg din = c.in(0, DIN), dx = c.out(DX0);
      ops::dropout_backward_add(din, k.seed, k.p, dx);
      return Outs{{dx.result("dx")}, {}};
    }, bwhat);
    if (!on_cpu()) continue;
    const double scale = 1.0 / (1.0 - double(k.p));
    DMat want(k.rows, k.cols), dwant(DX0);
    size_t kept = 0;
    for (size_t i = 0; i < X.v.size(); ++i) {
      const bool keep = fwd.r[0].m.v[i] != 0.0f;
      kept += keep;
      want.v[i] = keep ? X.v[i] * scale : 0.0;
      if (keep) dwant.v[i] += DIN.v[i] * scale;  // the forward's mask
    }
    expect_mat(fwd.r[0].m, want, kElem, what + " values");
    expect_mat(bwd.r[0].m, dwant, kElem, bwhat + " vs the forward's mask");
    if (k.p == 0.0f) expect_mat(fwd.r[0].m, X, kExact, what + ": p = 0 keeps x");
    const double n = double(X.v.size()), frac = double(kept) / n;
    if (n >= 1000) {
      EXPECT_NEAR(frac, 1.0 - k.p, 6.0 * std::sqrt(double(k.p) * (1.0 - k.p) / n) + 1e-12) << what << ": fraction kept";
    }
    // The mask depends on (seed, i) only.
    Tensor ones = Tensor::from_vector({1, int64_t(X.v.size())}, std::vector<float>(X.v.size(), 1.0f));
    Tensor flat({1, int64_t(X.v.size())});
    const int threads = ops::num_threads();
    ops::set_num_threads(1);
    ops::dropout(ones.view(), k.seed, k.p, flat.view());
    ops::set_num_threads(threads);
    const std::vector<float> m1 = flat.to_vector();
    size_t same = 0, differs_other_seed = 0;
    for (size_t i = 0; i < m1.size(); ++i) same += (m1[i] != 0.0f) == (fwd.r[0].m.v[i] != 0.0f);
    EXPECT_EQ(same, m1.size()) << what << ": the mask of one row of n elements at 1 thread";
    if (k.p > 0.0f && n >= 100) {
      ops::dropout(ones.view(), k.seed + 1, k.p, flat.view());
      const std::vector<float> m2 = flat.to_vector();
      for (size_t i = 0; i < m2.size(); ++i) differs_other_seed += (m1[i] != 0.0f) != (m2[i] != 0.0f);
      EXPECT_GT(differs_other_seed, 0u) << what << ": another seed gives another mask";
    }
  }
}

// ---- LoRA, fused -----------------------------------------------------------------------------------------

// Naive (double): xa = drop(x) A^T, y = y0 + scaling xa B^T with drop from the CPU's keep function; the
// backward's dB = dB0 + scaling dy^T xa, dA = dA0 + dxa^T drop(x) with dxa = scaling dy B, dx = dx0 + the
// gradient through the mask. y is a column block of a wider buffer in the strided variant. Dropout on and off,
// ranks that fill no group of 8, odd sizes.
struct LoraOpCase {
  int64_t M, K, N, r;
  float p;
  uint64_t seed;
};
constexpr LoraOpCase kLoraOps[] = {{5, 37, 11, 3, 0.0f, 0}, {9, 64, 16, 8, 0.1f, 77}, {33, 100, 7, 13, 0.25f, 5},
                                   {70, 48, 24, 16, 0.0f, 3}};

DMat naive_drop(const Mat& X, const LoraOpCase& k) {
  DMat xd(X);
  if (k.seed == 0 || k.p == 0.0f) return xd;
  const double scale = 1.0 / double(1.0f - k.p);
  for (size_t i = 0; i < xd.v.size(); ++i)
    xd.v[i] = xv::cpu::dropout_keep(k.seed, uint64_t(i), k.p) ? double(float(X.v[i] * float(scale))) : 0.0;
  return xd;
}

DMat naive_mm(const DMat& a, bool ta, const DMat& b, bool tb) {  // op(a) op(b)
  const int64_t M = ta ? a.cols : a.rows, K = ta ? a.rows : a.cols, N = tb ? b.rows : b.cols;
  DMat c(M, N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int64_t q = 0; q < K; ++q) acc += (ta ? a.at(q, i) : a.at(i, q)) * (tb ? b.at(j, q) : b.at(q, j));
      c.at(i, j) = acc;
    }
  return c;
}

TEST_P(BackendOps, LoraForward) {
  const Spec spec{{false, true}, kReduce, false, 2};
  uint32_t seed = 1950;
  const float scaling = 0.625f;
  for (const LoraOpCase& k : kLoraOps) {
    const Mat X = rand_mat(k.M, k.K, seed++), A = rand_mat(k.r, k.K, seed++, -0.5f, 0.5f),
              B = rand_mat(k.N, k.r, seed++, -0.5f, 0.5f), Y0 = rand_mat(k.M, k.N, seed++);
    const std::string what = fmt_case("lora_forward", {{"M", k.M}, {"K", k.K}, {"N", k.N}, {"r", k.r}}) +
                             " p=" + std::to_string(k.p);
    const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
      const Arg x = c.in(0, X, false), a = c.in(1, A), b = c.in(2, B), y = c.out(Y0), xa = c.out(Mat(k.M, k.r, kNaN));
      ops::lora_forward(x, a, b, scaling, k.seed, k.p, y, xa);
      return Outs{{y.result("y"), xa.result("xa")}, {}};
    }, what);
    if (!on_cpu()) continue;
    const DMat xa = naive_mm(naive_drop(X, k), false, DMat(A), true);
    DMat y(Y0);
    const DMat up = naive_mm(xa, false, DMat(B), true);
    for (size_t i = 0; i < y.v.size(); ++i) y.v[i] += double(scaling) * up.v[i];
    expect_mat(ref.r[0].m, y, kReduce, what + " y vs naive");
    expect_mat(ref.r[1].m, xa, kReduce, what + " xa vs naive");
  }
}

TEST_P(BackendOps, LoraBackward) {
  const Spec spec{{false, true}, kReduce, false, 3};
  uint32_t seed = 1970;
  const float scaling = 0.625f;
  for (const LoraOpCase& k : kLoraOps)
    for (bool with_dx : {true, false}) {
      const Mat X = rand_mat(k.M, k.K, seed++), A = rand_mat(k.r, k.K, seed++, -0.5f, 0.5f),
                B = rand_mat(k.N, k.r, seed++, -0.5f, 0.5f), DY = rand_mat(k.M, k.N, seed++),
                DX0 = rand_mat(k.M, k.K, seed++), DA0 = rand_mat(k.r, k.K, seed++), DB0 = rand_mat(k.N, k.r, seed++);
      const std::string what = fmt_case("lora_backward", {{"M", k.M}, {"K", k.K}, {"N", k.N}, {"r", k.r},
                                                          {"dx", with_dx}}) + " p=" + std::to_string(k.p);
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg x = c.in(0, X, false), a = c.in(1, A), b = c.in(2, B), dy = c.in(3, DY);
        const Arg y = c.out(Mat(k.M, k.N, 0.0f)), xa = c.out(Mat(k.M, k.r, kNaN));
        ops::lora_forward(x, a, b, scaling, k.seed, k.p, y, xa);
        const Arg dA = c.out(DA0), dB = c.out(DB0);
        Arg dx;
        if (with_dx) dx = c.out(DX0, false);
        ops::lora_backward(x, a, b, xa, scaling, k.seed, k.p, dy, dx, dA, dB);
        Outs o{{dA.result("dA"), dB.result("dB")}, {}};
        if (with_dx) o.r.push_back(dx.result("dx"));
        return o;
      }, what);
      if (!on_cpu()) continue;
      const DMat xd = naive_drop(X, k), xa = naive_mm(xd, false, DMat(A), true);
      DMat dxa = naive_mm(DMat(DY), false, DMat(B), false);
      for (double& v : dxa.v) v *= double(scaling);
      DMat dB(DB0), dA(DA0);
      const DMat gB = naive_mm(DMat(DY), true, xa, false), gA = naive_mm(dxa, true, xd, false);
      for (size_t i = 0; i < dB.v.size(); ++i) dB.v[i] += double(scaling) * gB.v[i];
      for (size_t i = 0; i < dA.v.size(); ++i) dA.v[i] += gA.v[i];
      expect_mat(ref.r[0].m, dA, kReduce, what + " dA vs naive");
      expect_mat(ref.r[1].m, dB, kReduce, what + " dB vs naive");
      if (!with_dx) continue;
      DMat dx(DX0);
      const DMat gx = naive_mm(dxa, false, DMat(A), false);
      const bool drop = k.seed != 0 && k.p > 0.0f;
      for (size_t i = 0; i < dx.v.size(); ++i)
        if (!drop || xv::cpu::dropout_keep(k.seed, uint64_t(i), k.p)) dx.v[i] += gx.v[i] / (drop ? 1.0 - k.p : 1.0);
      expect_mat(ref.r[2].m, dx, kReduce, what + " dx vs naive");
    }
}

// ---- The distillation loss, fused ---------------------------------------------------------------------

// Naive (double): en = mean((s_en - t)^2), xx = mean((s_xx - t)^2), ds += weight 2 (s - t) / n; on the CPU the
// fused op gives exactly the bits of two mse_loss calls. n crosses the 4096-element blocks.
TEST_P(BackendOps, DistillLoss) {
  const Spec spec{{false, false}, kElem, false, 1, kMseRelCuda};
  uint32_t seed = 2050;
  const float weight = 0.35f;
  for (auto [R, C] : {std::pair<int64_t, int64_t>{1, 1}, {4, 33}, {3, 4096}, {2, 5000}}) {
    const Mat SE = rand_mat(R, C, seed++), SX = rand_mat(R, C, seed++), Tm = rand_mat(R, C, seed++),
              D0 = rand_mat(R, C, seed++, -1e-3f, 1e-3f);
    for (int grads : {3, 1, 0}) {
      const std::string what = fmt_case("distill_loss", {{"rows", R}, {"cols", C}, {"grads", grads}});
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg se = c.in(0, SE), sx = c.in(1, SX), t = c.in(2, Tm);
        Arg de, dx;
        if (grads & 1) de = c.out(D0);
        if (grads & 2) dx = c.out(D0);
        const ops::DistillTerms terms = ops::distill_loss(se, sx, t, weight, de, dx);
        Outs o;
        o.s = {terms.en, terms.xx};
        if (grads & 1) o.r.push_back(de.result("ds_en"));
        if (grads & 2) o.r.push_back(dx.result("ds_xx"));
        return o;
      }, what);
      if (!on_cpu()) continue;
      {  // the bits of two mse_loss calls
        Tensor s_en = Tensor::from_vector({R, C}, SE.v), s_xx = Tensor::from_vector({R, C}, SX.v),
               t = Tensor::from_vector({R, C}, Tm.v);
        EXPECT_EQ(ref.s[0], ops::mse_loss(s_en, t, View{}, 1.0f)) << what;
        EXPECT_EQ(ref.s[1], ops::mse_loss(s_xx, t, View{}, 1.0f)) << what;
      }
      const double n = double(R * C);
      double se = 0.0, sx = 0.0;
      DMat de(D0), dx(D0);
      for (size_t i = 0; i < Tm.v.size(); ++i) {
        const double a = double(SE.v[i]) - Tm.v[i], b = double(SX.v[i]) - Tm.v[i];
        se += a * a, sx += b * b;
        de.v[i] += double(weight) * 2.0 * a / n, dx.v[i] += double(weight) * 2.0 * b / n;
      }
      EXPECT_NEAR(ref.s[0], se / n, 1e-12 * se / n) << what;
      EXPECT_NEAR(ref.s[1], sx / n, 1e-12 * sx / n) << what;
      size_t r = 0;
      if (grads & 1) expect_mat(ref.r[r++].m, de, kElem, what + " ds_en vs naive");
      if (grads & 2) expect_mat(ref.r[r++].m, dx, kElem, what + " ds_xx vs naive");
    }
  }
}

// The pooled variant: English pooled at the last token (idx), the other language by the masked mean (weights
// 1 and 0); the gradients land in the hidden rows, added to what they hold. Naive (double): pooling, the two
// terms and pooling's adjoint.
TEST_P(BackendOps, DistillLossPooled) {
  const Spec spec{{false, false}, kReduce, false, 1, kMseRelCuda};
  const int64_t B = 3, T = 7, C = 10;
  const float weight = 0.5f;
  const Mat HE = rand_mat(B * T, C, 2070), HX = rand_mat(B * T, C, 2071), Tm = rand_mat(B, C, 2072),
            DHE = rand_mat(B * T, C, 2073), DHX = rand_mat(B * T, C, 2074);
  Mat M(B, T, 1.0f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = T - b; t < T; ++t) M.at(b, t) = 0.0f;  // padding
  const std::vector<int32_t> last = {6, 7 + 4, 14 + 0};
  const std::string what = "distill_loss_pooled B=3 T=7 C=10";
  const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
    const Arg he = c.in(0, HE), hx = c.in(1, HX), t = c.in(2, Tm), dhe = c.out(DHE), dhx = c.out(DHX);
    ops::DistillPool pe, px;
    pe.idx = c.index(last), pe.B = B, pe.T = T;
    px.mask = c.fixed(M, DType::F32), px.B = B, px.T = T;
    const ops::DistillTerms terms = ops::distill_loss_pooled(he, pe, hx, px, t, weight, dhe, dhx);
    return Outs{{dhe.result("dh_en"), dhx.result("dh_xx")}, {terms.en, terms.xx}};
  }, what);
  if (!on_cpu()) return;
  const double n = double(B * C);
  DMat de(DHE), dx(DHX);
  double se = 0.0, sx = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    double cnt = 0.0;
    for (int64_t t = 0; t < T; ++t) cnt += M.at(b, t);
    for (int64_t c = 0; c < C; ++c) {
      double mean = 0.0;
      for (int64_t t = 0; t < T; ++t) mean += M.at(b, t) * HX.at(b * T + t, c);
      mean /= cnt;
      const double a = double(HE.at(last[size_t(b)], c)) - Tm.at(b, c), d = mean - Tm.at(b, c);
      se += a * a, sx += d * d;
      de.at(last[size_t(b)], c) += double(weight) * 2.0 * a / n;
      for (int64_t t = 0; t < T; ++t) dx.at(b * T + t, c) += M.at(b, t) / cnt * double(weight) * 2.0 * d / n;
    }
  }
  EXPECT_NEAR(ref.s[0], se / n, 1e-12 * se / n);
  EXPECT_NEAR(ref.s[1], sx / n, 1e-6 * sx / n);  // the mean pooled in f32
  expect_mat(ref.r[0].m, de, kElem, what + " dh_en vs naive");
  expect_mat(ref.r[1].m, dx, kElem, what + " dh_xx vs naive");
}

// ---- Losses and the optimizer -------------------------------------------------------------------------------

// Naive: weight * mean((s - t)^2) in double (1e-12 relative: only the order of the f64 sum may differ) and
// ds += weight * 2 (s - t) / n in double; without ds the same value. n crosses the 4096-element blocks.
TEST_P(BackendOps, MseLoss) {
  const Spec spec{{false, false}, kElem, false, 1, kMseRelCuda};
  uint32_t seed = 2000;
  const float weight = 0.7f;
  for (auto [R, C] : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {3, 4096}, {1, 8197}}) {
    const Mat S = rand_mat(R, C, seed++), Tm = rand_mat(R, C, seed++), DS0 = rand_mat(R, C, seed++, -1e-3f, 1e-3f);
    const double n = double(R * C);
    for (bool with_ds : {true, false}) {
      const std::string what = fmt_case("mse_loss", {{"rows", R}, {"cols", C}, {"ds", with_ds}});
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg s = c.in(0, S), t = c.in(1, Tm);
        Arg ds;
        if (with_ds) ds = c.out(DS0);
        Outs o;
        o.s.push_back(ops::mse_loss(s, t, ds, weight));
        if (with_ds) o.r.push_back(ds.result("ds"));
        return o;
      }, what);
      if (!on_cpu()) continue;
      double sum = 0.0;
      DMat dwant(DS0);
      for (size_t i = 0; i < S.v.size(); ++i) {
        const double d = double(S.v[i]) - double(Tm.v[i]);
        sum += d * d;
        dwant.v[i] += double(weight) * 2.0 * d / n;
      }
      EXPECT_NEAR(ref.s[0], double(weight) * sum / n, 1e-12 * double(weight) * sum / n) << what << " vs naive";
      if (with_ds) expect_mat(ref.r[0].m, dwant, kElem, what + " ds vs naive");
    }
  }
}

// Naive: a double-precision transcription of ops.h's torch formula, its state kept in double over several
// steps with a new gradient each step (and a zero gradient element: m = v = 0, no update).
TEST_P(BackendOps, AdamW) {
  const Spec spec{{false, false}, kElem};
  uint32_t seed = 2100;
  const ops::AdamWParams cfgs[] = {{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f}, {0.1f, 0.8f, 0.99f, 1e-6f, 0.0f}};
  constexpr int kSteps = 5;
  for (const ops::AdamWParams& cfg : cfgs)
    for (auto [R, C] : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {1, 1000}}) {
      const Mat P0 = rand_mat(R, C, seed++);
      std::vector<Mat> G;
      for (int s = 0; s < kSteps; ++s) {
        G.push_back(rand_mat(R, C, seed++, -1e-2f, 1e-2f));
        if (R * C > 1) G.back().v[1] = 0.0f;
      }
      const std::string what = fmt_case("adamw_update", {{"rows", R}, {"cols", C}, {"steps", kSteps}}) +
                               " lr=" + std::to_string(cfg.lr) + " wd=" + std::to_string(cfg.weight_decay);
      const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
        const Arg p = c.out_as(P0, DType::F32), m = c.out_as(Mat(R, C), DType::F32),
                  v = c.out_as(Mat(R, C), DType::F32);
        for (int s = 0; s < kSteps; ++s) ops::adamw_update(p, c.in(0, G[size_t(s)]), m, v, cfg.lr, s + 1, cfg);
        return Outs{{p.result("p"), m.result("m"), v.result("v")}, {}};
      }, what);
      if (!on_cpu()) continue;
      DMat p(P0), m(R, C), v(R, C);
      const double lr = cfg.lr, b1 = cfg.beta1, b2 = cfg.beta2, eps = cfg.eps, wd = cfg.weight_decay;
      for (int s = 0; s < kSteps; ++s) {
        const int t = s + 1;
        const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
        for (size_t i = 0; i < p.v.size(); ++i) {
          const double g = G[size_t(s)].v[i];
          p.v[i] *= 1.0 - lr * wd;
          m.v[i] += (g - m.v[i]) * (1.0 - b1);
          v.v[i] = b2 * v.v[i] + (1.0 - b2) * g * g;
          p.v[i] -= lr / bc1 * m.v[i] / (std::sqrt(v.v[i]) / std::sqrt(bc2) + eps);
        }
      }
      expect_mat(ref.r[0].m, p, kElem, what + " p vs naive");
      expect_mat(ref.r[1].m, m, kElem, what + " m vs naive");
      expect_mat(ref.r[2].m, v, kElem, what + " v vs naive");
      if (R * C > 1) {
        EXPECT_EQ(ref.r[1].m.v[1], 0.0f) << what << ": a zero gradient keeps m = 0";
      }
    }
}

// The multi-tensor update: segments of odd sizes (one across the CUDA kernel's 8192-element blocks), the
// gradient scaled by clip inside; on every backend the bits of scale(g, clip) + adamw_update per segment on
// this backend (the same arithmetic, so exact), g left as it was.
TEST_P(BackendOps, AdamWMulti) {
  const ops::AdamWParams cfg{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
  const std::vector<int64_t> sizes = {1, 37, 9000, 5};
  for (float clip : {1.0f, 0.37f}) {
    std::vector<Tensor> P, G, M, V, P2, G2, M2, V2;
    uint32_t seed = 2150;
    for (int64_t n : sizes) {
      const Mat p0 = rand_mat(1, n, seed++), g0 = rand_mat(1, n, seed++, -1e-2f, 1e-2f);
      P.push_back(Tensor::from_vector({n}, p0.v, DType::F32, dev()));
      P2.push_back(Tensor::from_vector({n}, p0.v, DType::F32, dev()));
      G.push_back(Tensor::from_vector({n}, g0.v, DType::F32, dev()));
      G2.push_back(Tensor::from_vector({n}, g0.v, DType::F32, dev()));
      for (auto* t : {&M, &V, &M2, &V2}) t->push_back(Tensor({n}, DType::F32, dev()));
    }
    for (int step = 1; step <= 3; ++step) {
      std::vector<ops::AdamWSegment> segs;
      for (size_t i = 0; i < sizes.size(); ++i) segs.push_back({P[i], G[i], M[i], V[i]});
      ops::adamw_update_multi(segs, clip, cfg.lr, step, cfg);
      for (size_t i = 0; i < sizes.size(); ++i) {
        Tensor g = G2[i].to(dev());
        ops::scale(g, clip);
        ops::adamw_update(P2[i], g, M2[i], V2[i], cfg.lr, step, cfg);
      }
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string what = "adamw_update_multi clip=" + std::to_string(clip) + " segment " + std::to_string(i);
      EXPECT_EQ(P[i].to_vector(), P2[i].to_vector()) << what << ": p";
      EXPECT_EQ(M[i].to_vector(), M2[i].to_vector()) << what << ": m";
      EXPECT_EQ(V[i].to_vector(), V2[i].to_vector()) << what << ": v";
      EXPECT_EQ(G[i].to_vector(), G2[i].to_vector()) << what << ": g untouched";
    }
    EXPECT_NE(P[2].to_vector(), Tensor::from_vector({sizes[2]}, rand_mat(1, sizes[2], 2154).v).to_vector())
        << "the update moved p";
  }
}

// Naive: the sum of double(x)^2 over each chunk, in order, in double: exactly equal (ops.h fixes f64 and the
// order); the last chunk short.
TEST_P(BackendOps, SumSquaresChunks) {
  const Spec spec{{false, false}, kElem, false, 1, kSumSquaresRelCuda};
  uint32_t seed = 2200;
  for (auto [n, chunk] : {std::pair<int64_t, int64_t>{10, 3}, {1, 5}, {4097, 1024}, {64, 64}, {7, 1}, {1000, 999}}) {
    const Mat X = rand_mat(1, n, seed++, -3.0f, 3.0f);
    const std::string what = fmt_case("sum_squares_chunks", {{"n", n}, {"chunk", chunk}});
    const Outs ref = check_backends(dev(), spec, [&](Ctx& c) {
      Outs o;
      o.s = ops::sum_squares_chunks(c.in(0, X), chunk);
      return o;
    }, what);
    if (!on_cpu()) continue;
    std::vector<double> want;
    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
      double acc = 0.0;
      for (int64_t i = i0; i < std::min(n, i0 + chunk); ++i) acc += double(X.v[size_t(i)]) * double(X.v[size_t(i)]);
      want.push_back(acc);
    }
    EXPECT_EQ(ref.s, want) << what << " vs naive";
  }
}

// ---- The dispatch's checks --------------------------------------------------------------------------------

template <class F>
void expect_op_error(const std::string& op, F&& f, const std::string& what) {
  EXPECT_THROW(f(), xv::Error) << what;
  try {
    f();
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find(op), std::string::npos) << what << ": the message does not name " << op
                                                                  << ": " << e.what();
  } catch (...) {
  }
}

// Shape mismatches and index/mask dtypes are refused before dispatch on every device; non-F32 outputs by the
// CPU backend; operands on different devices where a GPU is present (the cuda test: skipped without one).
TEST_P(BackendOps, DispatchErrors) {
  const Device d = dev();
  auto T = [&](xv::Shape s, DType t = DType::F32) { return Tensor(std::move(s), t, d); };
  Tensor a = T({3, 4}), b = T({5, 6}), c = T({3, 6}), w = T({6, 4}), y = T({3, 5}), y_ok = T({3, 6});
  expect_op_error("gemm", [&] { ops::gemm(a, false, b, false, c, 1.0f, 0.0f); }, "gemm K mismatch");
  expect_op_error("linear", [&] { ops::linear(a, w, View{}, y); }, "linear y shape");
  expect_op_error("add", [&] { ops::add(a.view(), b.view()); }, "add shapes");
  Tensor g5 = T({5});
  expect_op_error("layernorm", [&] { ops::layernorm(a, g5, View{}, T({3, 4}), 1e-5f); }, "layernorm g size");
  ops::AttentionParams p;
  Tensor q = T({10, 8}), kv = T({10, 4}), o = T({10, 8}), bad_mask = T({2, 5}, DType::BF16);
  p.q = q, p.k = kv, p.v = kv, p.o = o, p.B = 2, p.T = 5, p.Hq = 2, p.Hkv = 1, p.D = 4, p.scale = 0.5f;
  ops::AttentionParams p_shape = p;
  p_shape.T = 4;
  expect_op_error("attention", [&] { ops::attention(p_shape); }, "attention q shape");
  ops::AttentionParams p_mask = p;
  p_mask.key_mask = bad_mask;
  expect_op_error("attention", [&] { ops::attention(p_mask); }, "attention mask dtype");
  // Wrong index dtype.
  Tensor table = T({5, 4}), out = T({3, 4}), fidx = T({3}), lidx = T({3}, DType::I64);
  expect_op_error("gather_rows", [&] { ops::gather_rows(table, View{}, fidx, out); }, "gather_rows F32 idx");
  expect_op_error("copy_rows", [&] { ops::copy_rows(out, lidx, table); }, "copy_rows I64 idx");
  expect_op_error("scatter_add_rows", [&] { ops::scatter_add_rows(out, fidx, table, View{}); },
                  "scatter_add_rows F32 idx");
  // Other checked dtypes and arguments.
  Tensor pb = T({4}, DType::BF16), p32 = T({4});
  expect_op_error("adamw_update", [&] { ops::adamw_update(pb, p32, p32, p32, 1e-3f, 1, {}); }, "adamw_update p BF16");
  expect_op_error("dropout", [&] { ops::dropout(p32, 1, 1.0f, T({4})); }, "dropout p = 1");
  expect_op_error("sum_squares_chunks", [&] { ops::sum_squares_chunks(p32, 0); }, "sum_squares_chunks chunk 0");
  expect_op_error("copy", [&] { ops::copy(T({4}, DType::I32), p32); }, "copy I32 -> F32");
  if (on_cpu()) {  // the CPU computes in f32: its outputs must be F32
    Tensor ybf = T({3, 6}, DType::BF16), xf16 = T({3, 4}, DType::F16);
    expect_op_error("linear", [&] { ops::linear(a, w, View{}, ybf); }, "linear BF16 y on the cpu");
    expect_op_error("gemm", [&] { ops::gemm(a, false, w, true, ybf, 1.0f, 0.0f); }, "gemm BF16 C on the cpu");
    expect_op_error("layernorm", [&] { ops::layernorm(a, T({4}), View{}, xf16, 1e-5f); }, "layernorm F16 y on the cpu");
    expect_op_error("activation", [&] { ops::activation(ops::Act::silu, xf16); }, "activation F16 x on the cpu");
    ops::AttentionParams p_bf = p;
    Tensor obf = T({10, 8}, DType::BF16);
    p_bf.o = obf;
    expect_op_error("attention", [&] { ops::attention(p_bf); }, "attention BF16 o on the cpu");
    Tensor cs = T({5, 4});
    expect_op_error("rope", [&] { ops::rope(T({10, 8}, DType::BF16), 2, 5, 2, 4, 4, cs, cs); },
                    "rope BF16 x on the cpu");
  } else {  // operands on different devices
    Tensor host = Tensor({3, 6}, DType::F32, Device::cpu());
    expect_op_error("add", [&] { ops::add(y_ok, host); }, "add across devices");
    expect_op_error("linear", [&] { ops::linear(a, w, View{}, host); }, "linear y on the host");
    expect_op_error("gemm", [&] { ops::gemm(host, true, host, false, T({6, 6}), 1.0f, 0.0f); }, "gemm across devices");
  }
}

}  // namespace

// ---- The front door's checks that no backend case above reaches -------------------------------------------

namespace {

std::string op_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const xv::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// Host indices are checked against their tables: an index past a table, or a negative one without a second
// table, is an error naming the op and the index, never a read out of bounds.
TEST(OpsChecks, HostIndicesAreCheckedAgainstTheirTables) {
  const xv::Tensor table = xv::Tensor::filled({4, 3}, 1.0f), other = xv::Tensor::filled({2, 3}, 2.0f);
  xv::Tensor out({2, 3});
  EXPECT_NO_THROW(xv::ops::gather_rows(table, other, xv::Tensor::indices({3, -2}), out));
  std::string e = op_error([&] { xv::ops::gather_rows(table, xv::View{}, xv::Tensor::indices({1, 4}), out); });
  EXPECT_NE(e.find("gather_rows: index 4 (at 1)"), std::string::npos) << e;
  e = op_error([&] { xv::ops::gather_rows(table, xv::View{}, xv::Tensor::indices({-1, 0}), out); });
  EXPECT_NE(e.find("gather_rows: index -1"), std::string::npos) << e;
  e = op_error([&] { xv::ops::gather_rows(table, other, xv::Tensor::indices({0, -3}), out); });
  EXPECT_NE(e.find("row 2 of 'b'"), std::string::npos) << e;
  xv::Tensor dst({4, 3});
  EXPECT_NO_THROW(xv::ops::copy_rows(out, xv::Tensor::indices({-1, 3}), dst));  // negative: skipped
  e = op_error([&] { xv::ops::copy_rows(out, xv::Tensor::indices({0, 9}), dst); });
  EXPECT_NE(e.find("copy_rows: index 9"), std::string::npos) << e;
  // scatter_add_rows skips the rows whose table is absent, and refuses a row past a present one.
  xv::Tensor acc({4, 3});
  EXPECT_NO_THROW(xv::ops::scatter_add_rows(out, xv::Tensor::indices({-7, 2}), acc, xv::View{}));
  e = op_error([&] { xv::ops::scatter_add_rows(out, xv::Tensor::indices({4, 0}), acc, xv::View{}); });
  EXPECT_NE(e.find("scatter_add_rows: index 4"), std::string::npos) << e;
}

// A tensor without storage (released by FSDP, or laid out shape-only) passed to an op, whole or sliced, is an
// error naming the op, not a dereference of a null pointer.
TEST(OpsChecks, ShapeOnlyOperandsAreRefusedEvenWhenSliced) {
  const xv::Tensor w = xv::Tensor::shape_only({6, 4}), x = xv::Tensor::filled({2, 4}, 1.0f);
  xv::Tensor y({2, 2});
  std::string e = op_error([&] { xv::ops::linear(x, w.rows(2, 2), xv::View{}, y); });
  EXPECT_NE(e.find("linear: operand 'W' has no storage"), std::string::npos) << e;
  e = op_error([&] { xv::ops::add(xv::Tensor::shape_only({2, 4}).cols(1, 2), x.cols(0, 2)); });
  EXPECT_NE(e.find("no storage"), std::string::npos) << e;
}

// Zero-sized work is a no-op for every op that has nothing to do (an empty batch reaches the ops as T = 0).
TEST(OpsChecks, EmptyOperandsAreNoOps) {
  xv::Tensor x({0, 4});
  const xv::Tensor pos({0, 4});
  EXPECT_NO_THROW(xv::ops::add_rows(x, pos));
  EXPECT_NO_THROW(xv::ops::scale(x, 2.0f));
  xv::Tensor e;  // a default tensor holds no elements
  EXPECT_EQ(e.numel(), 0);
  EXPECT_TRUE(e.empty());
  EXPECT_FALSE(e.shape_only());
}
