// cuBLASLt, loaded when the CUDA backend first needs it rather than when the program starts: loading
// libcublasLt costs about 200 MB of resident memory (measured: a program that only links it starts at 211 MB),
// which every run of the CLI, every test and every CPU-only job would pay. The functions the backend calls
// (cuda_gemm.cpp, cuda_check.cpp) are defined here with cuBLASLt's own declarations, and each forwards to the
// library's symbol, looked up once in a dlopen'ed handle of its own.
#include <cublasLt.h>
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"

namespace {

void* library() {
  static void* handle = nullptr;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    // XV_CUBLASLT names the library file when it is not where the loader looks (a Python wheel's copy, say).
    const std::string name = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
    const char* env = std::getenv("XV_CUBLASLT");
    std::vector<std::string> tries;
    if (env && *env) tries.push_back(env);
    tries.push_back(name);
    tries.push_back(std::string(XV_CUDA_LIBRARY_DIR) + "/" + name);
    for (const std::string& path : tries) {
      handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle) return;
      const char* e = ::dlerror();
      error += (error.empty() ? "" : "; ") + std::string(e ? e : path + ": not found");
    }
  });
  XV_CHECK(handle, "cuda: cannot load cuBLASLt (libcublasLt.so.{}), which the GEMMs need: {}", CUBLAS_VER_MAJOR, error);
  return handle;
}

// The library's function `name`, of the type of our declaration `F`.
template <typename F>
F* symbol(const char* name) {
  void* f = ::dlsym(library(), name);
  XV_CHECK(f, "cuda: cuBLASLt has no function {} (a cuBLASLt older than the headers this was built with?)", name);
  return reinterpret_cast<F*>(f);
}

}  // namespace

#define XV_FORWARD(name, params, args)                          \
  extern "C" auto name params -> decltype(::name args) {      \
    static auto* f = symbol<decltype(::name)>(#name);          \
    return f args;                                             \
  }

XV_FORWARD(cublasLtCreate, (cublasLtHandle_t * h), (h))
XV_FORWARD(cublasLtDestroy, (cublasLtHandle_t h), (h))
XV_FORWARD(cublasLtGetStatusName, (cublasStatus_t s), (s))
XV_FORWARD(cublasLtGetStatusString, (cublasStatus_t s), (s))
XV_FORWARD(cublasLtMatmul,
           (cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void* alpha, const void* A, cublasLtMatrixLayout_t Ad,
            const void* B, cublasLtMatrixLayout_t Bd, const void* beta, const void* C, cublasLtMatrixLayout_t Cd,
            void* D, cublasLtMatrixLayout_t Dd, const cublasLtMatmulAlgo_t* algo, void* ws, size_t ws_bytes,
            cudaStream_t stream),
           (h, d, alpha, A, Ad, B, Bd, beta, C, Cd, D, Dd, algo, ws, ws_bytes, stream))
XV_FORWARD(cublasLtMatmulAlgoGetHeuristic,
           (cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t Ad, cublasLtMatrixLayout_t Bd,
            cublasLtMatrixLayout_t Cd, cublasLtMatrixLayout_t Dd, cublasLtMatmulPreference_t p, int requested,
            cublasLtMatmulHeuristicResult_t results[], int* returned),
           (h, d, Ad, Bd, Cd, Dd, p, requested, results, returned))
XV_FORWARD(cublasLtMatmulDescCreate, (cublasLtMatmulDesc_t * d, cublasComputeType_t c, cudaDataType_t s), (d, c, s))
XV_FORWARD(cublasLtMatmulDescDestroy, (cublasLtMatmulDesc_t d), (d))
XV_FORWARD(cublasLtMatmulDescSetAttribute,
           (cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void* buf, size_t n), (d, a, buf, n))
XV_FORWARD(cublasLtMatmulPreferenceCreate, (cublasLtMatmulPreference_t * p), (p))
XV_FORWARD(cublasLtMatmulPreferenceDestroy, (cublasLtMatmulPreference_t p), (p))
XV_FORWARD(cublasLtMatmulPreferenceSetAttribute,
           (cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a, const void* buf, size_t n),
           (p, a, buf, n))
XV_FORWARD(cublasLtMatrixLayoutCreate,
           (cublasLtMatrixLayout_t * l, cudaDataType t, uint64_t rows, uint64_t cols, int64_t ld), (l, t, rows, cols, ld))
XV_FORWARD(cublasLtMatrixLayoutDestroy, (cublasLtMatrixLayout_t l), (l))
