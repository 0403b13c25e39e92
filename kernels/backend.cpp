#include "kernels/backend.h"

#include <map>
#include <memory>
#include <mutex>

#include "core/error.h"

namespace xv {

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
