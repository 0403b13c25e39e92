#include "kernels/backend.h"

#include <map>
#include <memory>
#include <mutex>

#include "core/error.h"
#include "core/tensor.h"

namespace xv {

// ---- Composite defaults of the fused ops ------------------------------------------------------------------
// seed 0 means no dropout here (ops.cpp passes seed 0 and p 0 when dropout is off).

void Backend::lora_forward(const View& x, const View& A, const View& B, float scaling, uint64_t seed, float p,
                           const View& y, const View& xa) {
  View in = x;
  Tensor xd;
  if (seed != 0) {
    xd = Tensor({x.rows, x.cols}, DType::F32, device());
    dropout(x, seed, p, xd);
    in = xd.view();
  }
  gemm(in, false, A, true, xa, 1.0f, 0.0f);       // xa (M, r) = drop(x) A^T
  gemm(xa, false, B, true, y, scaling, 1.0f);    // y += scaling xa B^T
}

void Backend::lora_backward(const View& x, const View& A, const View& B, const View& xa, float scaling,
                            uint64_t seed, float p, const View& dy, const View& dx, const View& dA, const View& dB) {
  View in = x;
  Tensor xd;
  if (seed != 0) {  // the forward's mask, recomputed
    xd = Tensor({x.rows, x.cols}, DType::F32, device());
    dropout(x, seed, p, xd);
    in = xd.view();
  }
  gemm(dy, true, xa, false, dB, scaling, 1.0f);   // dB (N, r) += scaling dy^T xa
  Tensor dxa({x.rows, A.rows}, DType::F32, device());
  gemm(dy, false, B, false, dxa, scaling, 0.0f);  // dxa (M, r) = scaling dy B
  gemm(dxa, true, in, false, dA, 1.0f, 1.0f);     // dA (r, K) += dxa^T drop(x)
  if (!dx.present) return;
  if (seed == 0) {
    gemm(dxa, false, A, false, dx, 1.0f, 1.0f);   // dx += dxa A
    return;
  }
  Tensor din({x.rows, x.cols}, DType::F32, device());
  gemm(dxa, false, A, false, din, 1.0f, 0.0f);
  dropout_backward_add(din, seed, p, dx);         // dx += keep / (1 - p) (dxa A)
}

void Backend::adamw_update_multi(const std::vector<ops::AdamWSegment>& segs, float clip, float lr, int64_t t,
                                 const ops::AdamWParams& cfg) {
  for (const ops::AdamWSegment& s : segs) {
    if (clip == 1.0f) {
      adamw_update(s.p, s.g, s.m, s.v, lr, t, cfg);
      continue;
    }
    Tensor g({s.g.rows, s.g.cols}, DType::F32, device());  // g * clip, g untouched
    copy(s.g, g);
    scale(g, clip);
    adamw_update(s.p, g, s.m, s.v, lr, t, cfg);
  }
}

ops::DistillTerms Backend::distill_loss(const View& s_en, const View& s_xx, const View& t, float weight,
                                        const View& ds_en, const View& ds_xx) {
  ops::DistillTerms out;
  if (ds_en.present) mse_loss(s_en, t, ds_en, weight);
  out.en = mse_loss(s_en, t, View{}, 1.0f);
  if (ds_xx.present) mse_loss(s_xx, t, ds_xx, weight);
  out.xx = mse_loss(s_xx, t, View{}, 1.0f);
  return out;
}

Backend& cpu_backend();  // kernels/cpu/cpu_backend.cpp

#ifdef XV_HAVE_CUDA
// kernels/cuda/cuda_backend.cpp: starts the backend of GPU `index` (registering the GPUs' memory), or throws.
std::unique_ptr<Backend> make_cuda_backend(int index);
int cuda_backend_device_count();
#endif

bool cuda_compiled() {
#ifdef XV_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef XV_HAVE_CUDA
  return cuda_backend_device_count();
#else
  return 0;
#endif
}

Backend& backend(Device d) {
  if (d.is_cpu()) return cpu_backend();
#ifdef XV_HAVE_CUDA
  static std::mutex mu;
  static std::map<int, std::unique_ptr<Backend>> started;
  std::lock_guard<std::mutex> lock(mu);
  auto it = started.find(d.index);
  if (it == started.end()) it = started.emplace(d.index, make_cuda_backend(d.index)).first;
  return *it->second;
#else
  fail("device {}: this build has no CUDA backend (nvcc was not found, or -DXV_CUDA=OFF)", d.str());
#endif
}

}  // namespace xv
