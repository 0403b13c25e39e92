// A backend implements the op set of kernels/ops.h for one device: kernels/cpu for the host (OpenBLAS,
// OpenMP; the reference), kernels/cuda for a GPU (cuBLASLt for the plain GEMMs, CUDA kernels for the rest;
// compiled whenever nvcc is found). ops.h checks the operands, then calls the backend of their device with
// the same views; a backend may assume what ops.h documents and checks (shapes agree, every present operand
// is on its device, index and mask dtypes). It still refuses dtypes it cannot compute in, naming the op.
//
// Adding an op: declare it in ops.h (with its shapes and its contract), check and dispatch it in ops.cpp, add
// a pure virtual here, implement it in every backend, and add it to tests/test_backend_ops.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/view.h"
#include "kernels/ops.h"

namespace xv {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 (NVIDIA H200)"
  // Returns when every op issued on this backend has finished.
  virtual void synchronize() {}

  virtual void fill(const View& x, float v) = 0;
  virtual void copy(const View& src, const View& dst) = 0;

  virtual void gemm(const View& A, bool ta, const View& B, bool tb, const View& C, float alpha, float beta) = 0;
  virtual void linear(const View& x, const View& W, const View& b, const View& y) = 0;
  virtual void linear_backward(const View& x, const View& W, const View& dy, const View& dx, const View& dW,
                               const View& db) = 0;

  virtual void layernorm(const View& x, const View& g, const View& b, const View& y, float eps) = 0;
  virtual void layernorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg,
                                  const View& db, float eps) = 0;
  virtual void rmsnorm(const View& x, const View& g, const View& y, float eps) = 0;
  virtual void rmsnorm_backward(const View& x, const View& g, const View& dy, const View& dx, const View& dg,
                                float eps) = 0;
  virtual void l2_normalize(const View& x) = 0;

  virtual void activation(ops::Act a, const View& x) = 0;
  virtual void activation_backward(ops::Act a, const View& x, const View& dy, const View& dx) = 0;
  virtual void swiglu(const View& gate_up, const View& out) = 0;
  virtual void swiglu_backward(const View& gate_up, const View& dout, const View& dgate_up) = 0;

  virtual void add(const View& y, const View& x) = 0;
  virtual void add_rows(const View& x, const View& src) = 0;
  virtual void scale(const View& x, float alpha) = 0;

  virtual void gather_rows(const View& a, const View& b, const View& idx, const View& out) = 0;
  virtual void copy_rows(const View& src, const View& idx, const View& dst) = 0;
  virtual void scatter_add_rows(const View& src, const View& idx, const View& a, const View& b) = 0;
  virtual void im2col_patches(const View& pixels, int64_t N, int64_t CH, int64_t S, int64_t P, const View& cols) = 0;

  virtual void rope_tables(double base, const std::vector<float>& ext, float mscale, const View& cos,
                           const View& sin) = 0;
  virtual void rope(const View& x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim, const View& cos,
                    const View& sin) = 0;
  virtual void rope_backward(const View& dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t rot_dim,
                             const View& cos, const View& sin) = 0;

  virtual void attention(const ops::AttentionParams& p) = 0;
  virtual void attention_backward(const ops::AttentionBackwardParams& p) = 0;

  virtual void masked_mean_rows(const View& x, const View& mask, int64_t B, int64_t T, const View& out) = 0;
  virtual void masked_mean_rows_backward(const View& dout, const View& mask, int64_t B, int64_t T,
                                         const View& dx) = 0;

  virtual void dropout(const View& x, uint64_t seed, float p, const View& out) = 0;
  virtual void dropout_backward_add(const View& din, uint64_t seed, float p, const View& dx) = 0;

  // Fused ops with a composite default (the CPU's: the unfused ops in sequence, in backend.cpp); a backend
  // overrides them with its fused kernels.
  virtual void lora_forward(const View& x, const View& A, const View& B, float scaling, uint64_t seed, float p,
                            const View& y, const View& xa);
  virtual void lora_backward(const View& x, const View& A, const View& B, const View& xa, float scaling,
                             uint64_t seed, float p, const View& dy, const View& dx, const View& dA, const View& dB);
  virtual ops::DistillTerms distill_loss(const View& s_en, const View& s_xx, const View& t, float weight,
                                         const View& ds_en, const View& ds_xx);

  virtual void adamw_update_multi(const std::vector<ops::AdamWSegment>& segs, float clip, float lr, int64_t t,
                                  const ops::AdamWParams& cfg);

  virtual double mse_loss(const View& s, const View& t, const View& ds, float weight) = 0;
  virtual void adamw_update(const View& p, const View& g, const View& m, const View& v, float lr, int64_t t,
                            const ops::AdamWParams& cfg) = 0;
  virtual std::vector<double> sum_squares_chunks(const View& x, int64_t chunk) = 0;
};

// The backend of a device, started on first use (a GPU backend registers its device memory then, so tensors
// can be made there). Throws naming the device when there is none: a build without CUDA, no driver, or an
// ordinal past the devices present.
Backend& backend(Device d);
// GPUs this process can use (0 in a build without CUDA, or without a driver or device; never throws).
int cuda_device_count();
// Whether this build compiled the CUDA backend.
bool cuda_compiled();

}  // namespace xv
