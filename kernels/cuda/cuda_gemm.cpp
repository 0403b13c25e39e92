// The cuBLASLt GEMM of cuda_gemm.h (host code, g++).
//
// Row-major to cuBLASLt's column-major: a row-major (r, c) matrix with row stride s is a column-major (c, r)
// matrix with leading dimension s, i.e. its transpose. So C = op(A) op(B) (row-major, M x N) is computed as the
// column-major C^T (N x M) = op(B)^T op(A)^T: cuBLASLt's "A" is our B and its "B" is our A, with the same
// transpose flags, m = N, n = M, k = K.
#include "kernels/cuda/cuda_gemm.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace xv::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's recommendation for Hopper

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: fail("cuda backend: gemm: a {} operand (expected F32, BF16 or F16)", dtype_name(t));
  }
}

// The largest power of two (at most 256) dividing the address: cuBLASLt's heuristic assumes 256-byte aligned
// operands unless told otherwise, and a column block of a fused buffer is often less aligned.
uint32_t alignment(const void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  if (u == 0) return 256;
  return uint32_t(std::min<uintptr_t>(u & (~u + 1), 256));
}

// The leading dimension of a row-major view as cuBLASLt sees it (at least its column count, and >= 1).
int64_t ld_of(const DMat& m) { return std::max<int64_t>(m.rows <= 1 ? m.cols : m.stride, std::max<int64_t>(m.cols, 1)); }

bool lt_supports(DType a, DType b, DType c) { return a == b && (c == a || c == DType::F32); }

// RAII for the descriptors of one call.
struct Desc {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Desc() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// An F32 contiguous copy of m.
DMat to_f32(const Ctx& c, Scratch& s, const DMat& m) {
  DMat f = s.matrix(DType::F32, m.rows, m.cols);
  copy(c, m, f);
  return f;
}

}  // namespace

Gemm::Gemm(int device) {
  (void)device;
  XV_CUBLAS_CHECK(cublasLtCreate(&lt_));
  XV_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  workspace_bytes_ = kWorkspaceBytes;
}

Gemm::~Gemm() {
  // Teardown must not throw (this may run at exit, after the runtime started unloading).
  if (workspace_) (void)cudaFree(workspace_);
  if (lt_) (void)cublasLtDestroy(lt_);
}

void Gemm::run(const Ctx& c, const DMat& A, bool ta, const DMat& B, bool tb, const DMat& C, float alpha,
               float beta) {
  const int64_t M = C.rows, N = C.cols, K = ta ? A.rows : A.cols;
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: C = beta C
    if (beta == 0.0f) fill(c, C, 0.0f);
    else if (beta != 1.0f) scale(c, C, beta);
    return;
  }
  if (lt_supports(A.dt, B.dt, C.dt)) {
    // beta 0 must ignore C (NaN included): zero it rather than rely on the library skipping the read.
    if (beta == 0.0f) fill(c, C, 0.0f);
    matmul(c, A, ta, B, tb, C, alpha, beta);
    return;
  }
  // A combination cuBLASLt does not take (f32 activations with a bf16 weight, say): compute in F32 throughout.
  Scratch s(c);
  const DMat a = A.dt == DType::F32 ? A : to_f32(c, s, A);
  const DMat b = B.dt == DType::F32 ? B : to_f32(c, s, B);
  if (C.dt == DType::F32) {
    if (beta == 0.0f) fill(c, C, 0.0f);
    matmul(c, a, ta, b, tb, C, alpha, beta);
    return;
  }
  DMat c32 = s.matrix(DType::F32, M, N);
  if (beta == 0.0f) fill(c, c32, 0.0f);
  else copy(c, C, c32);
  matmul(c, a, ta, b, tb, c32, alpha, beta);
  copy(c, c32, C);
}

void Gemm::matmul(const Ctx& c, const DMat& A, bool ta, const DMat& B, bool tb, const DMat& C, float alpha,
                  float beta) {
  const int64_t M = C.rows, N = C.cols, K = ta ? A.rows : A.cols;
  const cudaDataType_t ab_type = cuda_type(A.dt), c_type = cuda_type(C.dt);
  const int64_t lda = ld_of(A), ldb = ld_of(B), ldc = ld_of(C);
  const uint32_t al_a = alignment(A.p), al_b = alignment(B.p), al_c = alignment(C.p);

  Desc d;
  XV_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_lt_a = tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A is our B
  const cublasOperation_t op_lt_b = ta ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B is our A
  XV_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a, sizeof(op_lt_a)));
  XV_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b, sizeof(op_lt_b)));
  // Stored (column-major) shapes: our B (rows, cols) row-major is (cols, rows) column-major; likewise A and C.
  XV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, ab_type, uint64_t(B.cols), uint64_t(B.rows), ldb));
  XV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, ab_type, uint64_t(A.cols), uint64_t(A.rows), lda));
  XV_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, c_type, uint64_t(N), uint64_t(M), ldc));

  const Key key{int(A.dt), int(C.dt), 0, ta, tb, M, N, K, lda, ldb, ldc, al_a, al_b, al_c};
  cublasLtMatmulAlgo_t algo;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = algos_.find(key);
    if (it != algos_.end()) algo = it->second, cached = true;
  }
  if (!cached) {
    XV_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
    const uint64_t ws = workspace_bytes_;
    XV_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                         sizeof(ws)));
    // cuBLASLt's A is our B and vice versa.
    XV_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_b,
                                                         sizeof(al_b)));
    XV_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_a,
                                                         sizeof(al_a)));
    XV_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c,
                                                         sizeof(al_c)));
    XV_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                                                         sizeof(al_c)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    XV_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &found));
    if (found == 0)
      fail("cuda backend: gemm: cuBLASLt has no algorithm for op(A) {} x {} ({}), op(B) {} x {}, C {} x {} ({}) with "
           "row strides {}, {}, {} and alignments {}, {}, {} bytes",
           M, K, dtype_name(A.dt), K, N, M, N, dtype_name(C.dt), lda, ldb, ldc, al_a, al_b, al_c);
    algo = result.algo;
    std::lock_guard<std::mutex> lock(mu_);
    algos_.emplace(key, algo);
  }
  XV_CUBLAS_CHECK(cublasLtMatmul(lt_, d.op, &alpha, B.p, d.a, A.p, d.b, &beta, C.p, d.c, C.p, d.c, &algo, workspace_,
                                 workspace_bytes_, c.stream));
}

}  // namespace xv::cuda
