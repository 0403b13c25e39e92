// Row-major GEMM on one GPU through cuBLASLt (host code; cuda_gemm.cpp). True f32 arithmetic:
// CUBLAS_COMPUTE_32F with an f32 scale type (no TF32), whatever the storage dtypes.
#pragma once
#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/cuda_kernels.h"

namespace xv::cuda {

class Gemm {
 public:
  explicit Gemm(int device);  // the device must be current
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // C (M, N) = alpha op(A) op(B) + beta C (kernels/ops.h's gemm), any F32 / BF16 / F16 operands, any row
  // strides. Operand dtypes cuBLASLt cannot take together (A and B must agree, C must be theirs or F32) are
  // converted to F32 in scratch first; beta 0 ignores C's old values (NaN included); K = 0 gives beta C.
  void run(const Ctx& c, const DMat& A, bool ta, const DMat& B, bool tb, const DMat& C, float alpha, float beta);

 private:
  // One cublasLtMatmul on operands it supports directly.
  void matmul(const Ctx& c, const DMat& A, bool ta, const DMat& B, bool tb, const DMat& C, float alpha, float beta);

  // The heuristic's first algorithm per problem, cached: the same problem always runs the same algorithm (the
  // same bits), and the heuristic query is paid once.
  using Key = std::tuple<int, int, int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, uint32_t,
                         uint32_t, uint32_t>;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::mutex mu_;
  std::map<Key, cublasLtMatmulAlgo_t> algos_;
};

}  // namespace xv::cuda
