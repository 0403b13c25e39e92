// The cuda backend: kernels/ops.h on one GPU (host code, g++; nvcc's front end cannot parse core/view.h's fmt).
// It holds the device ordinal, one stream, a cuBLASLt handle with its workspace (cuda_gemm.h), and implements
// every op of xv::Backend by checking the dtypes it computes in, packing operands a kernel needs in one dtype,
// and calling the launchers of cuda_kernels.h. Also: make_cuda_backend / cuda_backend_device_count
// (kernels/backend.cpp) and the DeviceMemory of DeviceKind::cuda (core/storage.h).
//
// Ordering: every op of a backend runs on its stream, in issue order; synchronize() waits for them. The stream is
// a blocking one (cudaStreamDefault), so the legacy default stream that DeviceMemory's synchronous copies and
// memsets use is ordered with it both ways: a tensor copied to the host after an op sees the op's result.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/storage.h"
#include "core/tensor.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_kernels.h"

namespace xv {

namespace {

using cuda::Ctx;
using cuda::DMat;
using cuda::Scratch;

// ---- Device memory ---------------------------------------------------------------------------------------

class CudaMemory final : public DeviceMemory {
 public:
  void* allocate(int index, size_t bytes) override {
    XV_CUDA_CHECK(cudaSetDevice(index));
    void* p = nullptr;
    // At least one byte, so a tensor of zero elements still has an address (as on the host).
    const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it: an allocation failure must not poison later calls
      size_t free_b = 0, total_b = 0;
      (void)cudaMemGetInfo(&free_b, &total_b);
      fail("cuda:{}: out of memory allocating {} bytes ({:.2f} GiB; {:.2f} GiB free of {:.2f} GiB)", index, bytes,
           double(bytes) / double(1 << 30), double(free_b) / double(1 << 30), double(total_b) / double(1 << 30));
    }
    XV_CUDA_CHECK(e);
    return p;
  }
  void deallocate(int index, void* p) noexcept override {
    // Errors are dropped: this runs in destructors, also at exit after the runtime began unloading.
    if (!p) return;
    if (cudaSetDevice(index) == cudaSuccess) (void)cudaFree(p);
    (void)cudaGetLastError();
  }
  void zero(int index, void* p, size_t bytes) override {
    if (bytes == 0) return;
    XV_CUDA_CHECK(cudaSetDevice(index));
    XV_CUDA_CHECK(cudaMemset(p, 0, bytes));
  }
  void copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) override {
    if (bytes == 0) return;
    if (dd.is_cpu() && sd.is_cpu()) {
      std::memcpy(dst, src, bytes);
      return;
    }
    if (dd.is_cuda() && sd.is_cuda() && dd.index != sd.index) {
      XV_CUDA_CHECK(cudaSetDevice(dd.index));
      XV_CUDA_CHECK(cudaMemcpyPeer(dst, dd.index, src, sd.index, bytes));
      XV_CUDA_CHECK(cudaDeviceSynchronize());  // cudaMemcpyPeer may return before the copy is done
      return;
    }
    const cudaMemcpyKind kind = sd.is_cpu()   ? cudaMemcpyHostToDevice
                                : dd.is_cpu() ? cudaMemcpyDeviceToHost
                                              : cudaMemcpyDeviceToDevice;
    XV_CUDA_CHECK(cudaSetDevice(dd.is_cuda() ? dd.index : sd.index));
    XV_CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
    // A host-to-device copy from pageable memory, and a device-to-device one, may return before the device
    // has the bytes; the contract is that the copy is done.
    if (kind != cudaMemcpyDeviceToHost) XV_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }
};

CudaMemory g_cuda_memory;

// ---- Operand helpers -------------------------------------------------------------------------------------

bool floating(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

struct Arg {
  const char* name;
  const View* v;
};

// Refuses any present operand the cuda backend cannot compute in, naming the op.
void floats(const char* op, std::initializer_list<Arg> args) {
  for (const Arg& a : args)
    if (a.v->present && !floating(a.v->dtype))
      fail("cuda backend: {}: operand '{}' is {}; the cuda backend computes F32, BF16 or F16 operands", op, a.name,
           dtype_name(a.v->dtype));
}

DMat dm(const View& v) {
  DMat m;
  if (!v.present) return m;
  m.p = v.ptr, m.dt = v.dtype, m.rows = v.rows, m.cols = v.cols, m.present = true;
  m.stride = v.rows <= 1 ? v.cols : v.stride;  // a single row's stride is arbitrary in a View
  return m;
}

// Gives a group of operands that one kernel reads with one element type a common dtype: unchanged when their
// dtypes agree, else every non-F32 one replaced by an F32 copy in scratch (exact: bf16 and f16 widen exactly).
void unify_inputs(const Ctx& c, Scratch& s, std::initializer_list<DMat*> ms) {
  const DMat* first = nullptr;
  bool same = true;
  for (DMat* m : ms) {
    if (!m->present) continue;
    if (!first) first = m;
    else if (m->dt != first->dt) same = false;
  }
  if (same) return;
  for (DMat* m : ms) {
    if (!m->present || m->dt == DType::F32) continue;
    DMat f = s.matrix(DType::F32, m->rows, m->cols);
    cuda::copy(c, *m, f);
    *m = f;
  }
}

cuda::ActKind act_kind(ops::Act a) {
  switch (a) {
    case ops::Act::gelu_erf: return cuda::ActKind::gelu_erf;
    case ops::Act::gelu_tanh: return cuda::ActKind::gelu_tanh;
    case ops::Act::quick_gelu: return cuda::ActKind::quick_gelu;
    case ops::Act::silu: return cuda::ActKind::silu;
  }
  fail("cuda backend: activation: unknown activation {}", int(a));
}

// ---- The backend -----------------------------------------------------------------------------------------

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int index) : index_(index) {
    XV_CUDA_CHECK(cudaSetDevice(index_));
    cudaDeviceProp prop{};
    XV_CUDA_CHECK(cudaGetDeviceProperties(&prop, index_));
    if (prop.major < 8)
      fail("cuda:{} ({}): compute capability {}.{}; the cuda backend needs 8.0 or newer (bf16)", index_, prop.name,
           prop.major, prop.minor);
    name_ = "cuda:" + std::to_string(index_) + " (" + prop.name + ")";
    int optin = 0, pools = 0;
    XV_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, index_));
    XV_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, index_));
    gemm_ = std::make_unique<cuda::Gemm>(index_);
    XV_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamDefault));  // last: nothing below can throw
    ctx_.stream = stream_;
    ctx_.max_smem_optin = optin;
    ctx_.memory_pools = pools != 0;
  }
  ~CudaBackend() override {
    // No throwing here (this may run at exit, after the runtime began unloading).
    if (cudaSetDevice(index_) == cudaSuccess && stream_) {
      (void)cudaStreamSynchronize(stream_);
      gemm_.reset();
      (void)cudaStreamDestroy(stream_);
    }
    (void)cudaGetLastError();
  }

  Device device() const override { return Device::cuda(index_); }
  std::string name() const override { return name_; }
  void synchronize() override { XV_CUDA_CHECK(cudaStreamSynchronize(enter())); }

  void fill(const View& x, float v) override {
    const Ctx& c = ctx();
    if (v != 0.0f && !floating(x.dtype))
      fail("cuda backend: fill: a non-zero value into a {} view (only floating dtypes take one)",
           dtype_name(x.dtype));
    cuda::fill(c, dm(x), v);
  }

  void copy(const View& src, const View& dst) override {
    const Ctx& c = ctx();
    if (src.dtype != dst.dtype) floats("copy", {{"src", &src}, {"dst", &dst}});
    cuda::copy(c, dm(src), dm(dst));
  }

  void gemm(const View& A, bool ta, const View& B, bool tb, const View& C, float alpha, float beta) override {
    const Ctx& c = ctx();
    floats("gemm", {{"A", &A}, {"B", &B}, {"C", &C}});
    gemm_->run(c, dm(A), ta, dm(B), tb, dm(C), alpha, beta);
  }

  void linear(const View& x, const View& W, const View& b, const View& y) override {
    const Ctx& c = ctx();
    floats("linear", {{"x", &x}, {"W", &W}, {"b", &b}, {"y", &y}});
    const DMat xm = dm(x), wm = dm(W), bm = dm(b), ym = dm(y);
    if (!b.present) return gemm_->run(c, xm, false, wm, true, ym, 1.0f, 0.0f);
    if (y.dtype == DType::F32) {  // the cpu's order: y = b, then y += x W^T
      cuda::broadcast_rows(c, bm, ym);
      return gemm_->run(c, xm, false, wm, true, ym, 1.0f, 1.0f);
    }
    // A 16-bit y: add the bias in f32 and round once.
    Scratch s(c);
    DMat y32 = s.matrix(DType::F32, y.rows, y.cols);
    cuda::broadcast_rows(c, bm, y32);
    gemm_->run(c, xm, false, wm, true, y32, 1.0f, 1.0f);
    cuda::copy(c, y32, ym);
  }

  void linear_backward(const View& x, const View& W, const View& dy, const View& dx, const View& dW,
                       const View& db) override {
    const Ctx& c = ctx();
    floats("linear_backward", {{"x", &x}, {"W", &W}, {"dy", &dy}, {"dx", &dx}, {"dW", &dW}, {"db", &db}});
    const DMat xm = dm(x), wm = dm(W), dym = dm(dy);
    const int64_t N = W.rows, K = W.cols;
    if (dx.present) gemm_->run(c, dym, false, wm, false, dm(dx), 1.0f, 0.0f);              // (M, N) (N, K)
    if (dW.present && N > 0 && K > 0) gemm_->run(c, dym, true, xm, false, dm(dW), 1.0f, 1.0f);  // (N, M) (M, K)
    if (db.present && N > 0) cuda::row_sums_add(c, dym, dm(db));
  }

  void layernorm(const View& x, const View& g, const View& b, const View& y, float eps) override {
    const Ctx& c = ctx();
    floats("layernorm", {{"x", &x}, {"g", &g}, {"b", &b}, {"y", &y}});
    Scratch s(c);
    DMat gm = dm(g), bm = dm(b);
    unify_inputs(c, s, {&gm, &bm});
    cuda::layernorm(c, dm(x), gm, bm, dm(y), eps);
  }

  void layernorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg,
                          const View& db, float eps) override {
    const Ctx& c = ctx();
    floats("layernorm_backward", {{"x", &x}, {"g", &g}, {"dy", &dy}, {"dx", &dx}, {"dg", &dg}, {"db", &db}});
    Scratch s(c);
    DMat xm = dm(x), dym = dm(dy);
    unify_inputs(c, s, {&xm, &dym});
    cuda::norm_backward(c, false, xm, dm(g), dym, dm(dx), dm(dg), dm(db), eps);
  }

  void rmsnorm(const View& x, const View& g, const View& y, float eps) override {
    const Ctx& c = ctx();
    floats("rmsnorm", {{"x", &x}, {"g", &g}, {"y", &y}});
    cuda::rmsnorm(c, dm(x), dm(g), dm(y), eps);
  }

  void rmsnorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg,
                        float eps) override {
    const Ctx& c = ctx();
    floats("rmsnorm_backward", {{"x", &x}, {"g", &g}, {"dy", &dy}, {"dx", &dx}, {"dg", &dg}});
    Scratch s(c);
    DMat xm = dm(x), dym = dm(dy);
    unify_inputs(c, s, {&xm, &dym});
    cuda::norm_backward(c, true, xm, dm(g), dym, dm(dx), dm(dg), DMat{}, eps);
  }

  void l2_normalize(const View& x) override {
    const Ctx& c = ctx();
    floats("l2_normalize", {{"x", &x}});
    cuda::l2_normalize(c, dm(x));
  }

  void activation(ops::Act a, const View& x) override {
    const Ctx& c = ctx();
    floats("activation", {{"x", &x}});
    cuda::activation(c, act_kind(a), dm(x));
  }

  void activation_backward(ops::Act a, const View& x, const View& dy, const View& dx) override {
    const Ctx& c = ctx();
    floats("activation_backward", {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
    Scratch s(c);
    DMat xm = dm(x), dym = dm(dy);
    unify_inputs(c, s, {&xm, &dym});  // a packed dy is a copy, so dx may still be dy's memory
    cuda::activation_backward(c, act_kind(a), xm, dym, dm(dx));
  }

  void swiglu(const View& gate_up, const View& out) override {
    const Ctx& c = ctx();
    floats("swiglu", {{"gate_up", &gate_up}, {"out", &out}});
    cuda::swiglu(c, dm(gate_up), dm(out));
  }

  void swiglu_backward(const View& gate_up, const View& dout, const View& dgate_up) override {
    const Ctx& c = ctx();
    floats("swiglu_backward", {{"gate_up", &gate_up}, {"dout", &dout}, {"dgate_up", &dgate_up}});
    Scratch s(c);
    DMat gm = dm(gate_up), dom = dm(dout);
    unify_inputs(c, s, {&gm, &dom});
    cuda::swiglu_backward(c, gm, dom, dm(dgate_up));
  }

  void add(const View& y, const View& x) override {
    const Ctx& c = ctx();
    floats("add", {{"y", &y}, {"x", &x}});
    cuda::add(c, dm(y), dm(x));
  }

  void add_rows(const View& x, const View& src) override {
    const Ctx& c = ctx();
    floats("add_rows", {{"x", &x}, {"src", &src}});
    cuda::add_rows(c, dm(x), dm(src));
  }

  void scale(const View& x, float alpha) override {
    const Ctx& c = ctx();
    floats("scale", {{"x", &x}});
    cuda::scale(c, dm(x), alpha);
  }

  void gather_rows(const View& a, const View& b, const View& idx, const View& out) override {
    const Ctx& c = ctx();
    floats("gather_rows", {{"a", &a}, {"b", &b}, {"out", &out}});
    Scratch s(c);
    DMat am = dm(a), bm = dm(b);
    unify_inputs(c, s, {&am, &bm});
    cuda::gather_rows(c, am, bm, dm(idx), dm(out));
  }

  void copy_rows(const View& src, const View& idx, const View& dst) override {
    const Ctx& c = ctx();
    floats("copy_rows", {{"src", &src}, {"dst", &dst}});
    cuda::copy_rows(c, dm(src), dm(idx), dm(dst));
  }

  void scatter_add_rows(const View& src, const View& idx, const View& a, const View& b) override {
    const Ctx& c = ctx();
    floats("scatter_add_rows", {{"src", &src}, {"a", &a}, {"b", &b}});
    cuda::scatter_add_rows(c, dm(src), dm(idx), dm(a), dm(b));
  }

  void im2col_patches(const View& pixels, int64_t N, int64_t CH, int64_t S, int64_t P, const View& cols) override {
    const Ctx& c = ctx();
    floats("im2col_patches", {{"pixels", &pixels}, {"cols", &cols}});
    cuda::im2col_patches(c, dm(pixels), N, CH, S, P, dm(cols));
  }

  void rope_tables(double base, const std::vector<float>& ext, float mscale, const View& cos,
                   const View& sin) override {
    const Ctx& c = ctx();
    floats("rope_tables", {{"cos", &cos}, {"sin", &sin}});
    const int64_t T = cos.rows, rot = cos.cols;
    if (T * rot == 0) return;
    // The cpu's tables, computed on the host and copied: bit-identical on both backends.
    std::vector<float> hc(size_t(T * rot)), hs(hc.size());
    cpu::rope_tables(T, rot, base, ext.empty() ? nullptr : ext.data(), mscale, hc.data(), hs.data());
    Scratch s(c);
    const std::pair<const View*, const std::vector<float>*> tables[] = {{&cos, &hc}, {&sin, &hs}};
    for (const auto& [view, host] : tables) {
      const DMat d = dm(*view);
      DMat f = d.dt == DType::F32 ? d : s.matrix(DType::F32, T, rot);
      XV_CUDA_CHECK(cudaMemcpyAsync(f.p, host->data(), host->size() * sizeof(float), cudaMemcpyHostToDevice,
                                    c.stream));
      if (d.dt != DType::F32) cuda::copy(c, f, d);
    }
    // The host vectors die here: wait until the copies no longer need them.
    XV_CUDA_CHECK(cudaStreamSynchronize(c.stream));
  }

  void rope(const View& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, const View& cos,
            const View& sin) override {
    rope_impl("rope", x, B, T, H, D, rot_dim, cos, sin, false);
  }
  void rope_backward(const View& dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, const View& cos,
                     const View& sin) override {
    rope_impl("rope_backward", dx, B, T, H, D, rot_dim, cos, sin, true);
  }

  void attention(const ops::AttentionParams& p) override {
    const Ctx& c = ctx();
    floats("attention", {{"q", &p.q}, {"k", &p.k}, {"v", &p.v}, {"o", &p.o}});
    Scratch s(c);
    cuda::Attn a = attn(p);
    unify_inputs(c, s, {&a.q, &a.k, &a.v});
    cuda::attention(c, a);
  }

  void attention_backward(const ops::AttentionBackwardParams& p) override {
    const Ctx& c = ctx();
    floats("attention_backward", {{"q", &p.fwd.q}, {"k", &p.fwd.k}, {"v", &p.fwd.v}, {"dout", &p.dout},
                                  {"dq", &p.dq}, {"dk", &p.dk}, {"dv", &p.dv}});
    Scratch s(c);
    cuda::Attn a = attn(p.fwd);
    a.deterministic = p.deterministic;
    DMat dout = dm(p.dout);
    unify_inputs(c, s, {&a.q, &a.k, &a.v, &dout});
    // dk and dv are written by one kernel with one element type: when their dtypes differ, the non-F32 one is
    // computed into F32 scratch and cast into place afterwards.
    const DMat dk = dm(p.dk), dv = dm(p.dv);
    DMat dk_w = dk, dv_w = dv;
    if (dk.present && dv.present && dk.dt != dv.dt) {
      if (dk.dt != DType::F32) dk_w = s.matrix(DType::F32, dk.rows, dk.cols);
      if (dv.dt != DType::F32) dv_w = s.matrix(DType::F32, dv.rows, dv.cols);
    }
    cuda::attention_backward(c, a, dout, dm(p.dq), dk_w, dv_w);
    if (dk_w.p != dk.p) cuda::copy(c, dk_w, dk);
    if (dv_w.p != dv.p) cuda::copy(c, dv_w, dv);
  }

  void masked_mean_rows(const View& x, const View& mask, int64_t B, int64_t T, const View& out) override {
    const Ctx& c = ctx();
    floats("masked_mean_rows", {{"x", &x}, {"out", &out}});
    cuda::masked_mean_rows(c, dm(x), dm(mask), B, T, dm(out));
  }

  void masked_mean_rows_backward(const View& dout, const View& mask, int64_t B, int64_t T,
                                 const View& dx) override {
    const Ctx& c = ctx();
    floats("masked_mean_rows_backward", {{"dout", &dout}, {"dx", &dx}});
    cuda::masked_mean_rows_backward(c, dm(dout), dm(mask), B, T, dm(dx));
  }

  void dropout(const View& x, uint64_t seed, float p, const View& out) override {
    const Ctx& c = ctx();
    floats("dropout", {{"x", &x}, {"out", &out}});
    cuda::dropout(c, dm(x), seed, p, 1.0f / (1.0f - p), dm(out));
  }

  void dropout_backward_add(const View& din, uint64_t seed, float p, const View& dx) override {
    const Ctx& c = ctx();
    floats("dropout_backward_add", {{"din", &din}, {"dx", &dx}});
    cuda::dropout_backward_add(c, dm(din), seed, p, 1.0f / (1.0f - p), dm(dx));
  }

  void lora_forward(const View& x, const View& A, const View& B, float scaling, uint64_t seed, float p, const View& y,
                    const View& xa) override {
    const Ctx& c = ctx();
    floats("lora_forward", {{"x", &x}, {"A", &A}, {"B", &B}, {"y", &y}, {"xa", &xa}});
    cuda::lora_down(c, dm(x), dm(A), dm(xa), seed, p, seed ? 1.0f / (1.0f - p) : 1.0f, seed != 0);
    gemm(xa, false, B, true, y, scaling, 1.0f);  // y += scaling xa B^T
  }

  void lora_backward(const View& x, const View& A, const View& B, const View& xa, float scaling, uint64_t seed,
                     float p, const View& dy, const View& dx, const View& dA, const View& dB) override {
    const Ctx& c = ctx();
    floats("lora_backward",
           {{"x", &x}, {"A", &A}, {"B", &B}, {"xa", &xa}, {"dy", &dy}, {"dx", &dx}, {"dA", &dA}, {"dB", &dB}});
    gemm(dy, true, xa, false, dB, scaling, 1.0f);  // dB += scaling dy^T xa
    Tensor dxa({x.rows, A.rows}, DType::F32, device());
    gemm(dy, false, B, false, dxa, scaling, 0.0f);  // dxa = scaling dy B
    if (seed == 0) {
      gemm(dxa, true, x, false, dA, 1.0f, 1.0f);  // dA += dxa^T x
      if (dx.present) gemm(dxa, false, A, false, dx, 1.0f, 1.0f);
      return;
    }
    const float scale = 1.0f / (1.0f - p);
    cuda::lora_da(c, dm(x), dm(dxa), dm(dA), seed, p, scale);
    if (dx.present) cuda::lora_dx(c, dm(dxa), dm(A), dm(dx), seed, p, scale);
  }

  ops::DistillTerms distill_loss(const View& s_en, const View& s_xx, const View& t, float weight, const View& ds_en,
                                 const View& ds_xx) override {
    const Ctx& c = ctx();
    floats("distill_loss", {{"s_en", &s_en}, {"s_xx", &s_xx}, {"t", &t}, {"ds_en", &ds_en}, {"ds_xx", &ds_xx}});
    if (ds_en.present && ds_xx.present && ds_en.dtype != ds_xx.dtype)
      return Backend::distill_loss(s_en, s_xx, t, weight, ds_en, ds_xx);  // one kernel writes one dtype
    const int64_t n = t.numel();
    Scratch scratch(c);
    DMat se = dm(s_en), sx = dm(s_xx), tm = dm(t);
    unify_inputs(c, scratch, {&se, &sx, &tm});
    const float gscale = float(2.0 * double(weight) / double(n));
    std::vector<double> part;
    cuda::distill_loss(c, se, sx, tm, dm(ds_en), dm(ds_xx), gscale, part);
    double en = 0.0, xx = 0.0;
    for (size_t b = 0; b < part.size(); b += 2) en += part[b], xx += part[b + 1];  // block order, as the cpu
    return {en / double(n), xx / double(n)};
  }

  double mse_loss(const View& s, const View& t, const View& ds, float weight) override {
    const Ctx& c = ctx();
    floats("mse_loss", {{"s", &s}, {"t", &t}, {"ds", &ds}});
    const int64_t n = s.numel();
    if (n == 0) return 0.0;
    Scratch scratch(c);
    DMat sm = dm(s), tm = dm(t);
    unify_inputs(c, scratch, {&sm, &tm});
    const float gscale = float(2.0 * double(weight) / double(n));
    std::vector<double> part;
    cuda::mse_loss(c, sm, tm, dm(ds), gscale, part);
    double sum = 0.0;
    for (double v : part) sum += v;  // block order, as the cpu
    return double(weight) * sum / double(n);
  }

  void adamw_update(const View& p, const View& g, const View& m, const View& v, float lr, int64_t t,
                    const ops::AdamWParams& cfg) override {
    const Ctx& c = ctx();
    floats("adamw_update", {{"g", &g}});
    for (const Arg& a : {Arg{"p", &p}, Arg{"m", &m}, Arg{"v", &v}})
      if (a.v->dtype != DType::F32)
        fail("cuda backend: adamw_update: operand '{}' is {}, expected F32", a.name, dtype_name(a.v->dtype));
    cuda::adamw_update(c, dm(p), dm(g), dm(m), dm(v), adamw_step(lr, t, cfg));
  }

  void adamw_update_multi(const std::vector<ops::AdamWSegment>& segs, float clip, float lr, int64_t t,
                          const ops::AdamWParams& cfg) override {
    std::vector<cuda::AdamWSeg> table;
    for (const ops::AdamWSegment& s : segs)
      table.push_back({static_cast<float*>(s.p.ptr), static_cast<const float*>(s.g.ptr), static_cast<float*>(s.m.ptr),
                       static_cast<float*>(s.v.ptr), s.p.numel()});
    cuda::adamw_update_multi(ctx(), table, clip, adamw_step(lr, t, cfg));
  }

  // The step's scalars exactly as kernels/cpu/rows_cpu.cpp computes them (bias corrections in f64).
  static cuda::AdamWStep adamw_step(float lr, int64_t t, const ops::AdamWParams& cfg) {
    cuda::AdamWStep st;
    st.b1 = cfg.beta1, st.b2 = cfg.beta2, st.eps = cfg.eps;
    const double bc1 = 1.0 - std::pow(double(st.b1), double(t));
    const double bc2 = 1.0 - std::pow(double(st.b2), double(t));
    st.step_size = float(double(lr) / bc1);
    st.bc2_sqrt = float(std::sqrt(bc2));
    st.decay = 1.0f - lr * cfg.weight_decay;
    return st;
  }

  std::vector<double> sum_squares_chunks(const View& x, int64_t chunk) override {
    const Ctx& c = ctx();
    floats("sum_squares_chunks", {{"x", &x}});
    return cuda::sum_squares_chunks(c, dm(x), chunk);
  }

 private:
  // Every entry point first makes this backend's GPU current (the calling thread may have used another).
  cudaStream_t enter() const {
    XV_CUDA_CHECK(cudaSetDevice(index_));
    return stream_;
  }
  const Ctx& ctx() const {
    enter();
    return ctx_;
  }

  void rope_impl(const char* op, const View& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim,
                 const View& cos, const View& sin, bool backward) {
    const Ctx& c = ctx();
    floats(op, {{"x", &x}, {"cos", &cos}, {"sin", &sin}});
    Scratch s(c);
    DMat cm = dm(cos), sm = dm(sin);
    unify_inputs(c, s, {&cm, &sm});
    cuda::rope(c, dm(x), B, T, H, D, rot_dim, cm, sm, backward);
  }

  static cuda::Attn attn(const ops::AttentionParams& p) {
    cuda::Attn a;
    a.q = dm(p.q), a.k = dm(p.k), a.v = dm(p.v), a.o = dm(p.o);
    a.B = p.B, a.T = p.T, a.Hq = p.Hq, a.Hkv = p.Hkv, a.D = p.D;
    a.key_mask = p.key_mask.present ? static_cast<const float*>(p.key_mask.ptr) : nullptr;
    a.causal = p.causal;
    a.scale = p.scale;
    a.lse = p.lse.present ? static_cast<float*>(p.lse.ptr) : nullptr;
    return a;
  }

  int index_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  Ctx ctx_;
  std::unique_ptr<cuda::Gemm> gemm_;
};

// Why no GPU can be used ("" when one can), never throwing.
int device_count_or(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    if (why) {
      *why = std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")";
      // cudart says "driver version is insufficient" also when there is no driver at all.
      if (e == cudaErrorInsufficientDriver) *why += ": no NVIDIA driver is loaded, or it is older than CUDA " +
                                                    std::to_string(CUDART_VERSION / 1000) + "." +
                                                    std::to_string(CUDART_VERSION % 1000 / 10);
    }
    return 0;
  }
  return n;
}

}  // namespace

int cuda_backend_device_count() {
  try {
    return device_count_or(nullptr);
  } catch (...) {  // cudart does not throw, but this must never
    return 0;
  }
}

std::unique_ptr<Backend> make_cuda_backend(int index) {
  std::string why;
  const int n = device_count_or(&why);
  if (!why.empty()) fail("cuda:{}: no CUDA device can be used: {}", index, why);
  if (index < 0 || index >= n) fail("cuda:{}: no such device ({} CUDA device(s) present)", index, n);
  auto b = std::make_unique<CudaBackend>(index);
  static std::once_flag registered;
  std::call_once(registered, [] { register_device_memory(DeviceKind::cuda, &g_cuda_memory); });
  return b;
}

}  // namespace xv
