// The host side of the CUDA backend, which needs no GPU (compiled where nvcc is, label cuda): the device count
// never throws, starting a backend on a machine without a GPU is a clear xv::Error naming the device, tensors
// cannot be made on a device whose backend did not start, the one CUDA error policy (XV_CUDA_CHECK) throws
// naming the call and the line, and cuBLASLt is loaded on first use rather than at start-up.
#include <gtest/gtest.h>

#include <string>

#include "core/tensor.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_check.h"

namespace {

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(CudaHost, CompiledAndCountsDevicesWithoutThrowing) {
  EXPECT_TRUE(xv::cuda_compiled());
  int n = -1;
  EXPECT_NO_THROW(n = xv::cuda_device_count());
  EXPECT_GE(n, 0);
}

TEST(CudaHost, NoDeviceIsAClearError) {
  if (xv::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present: this checks the machine without one";
  try {
    xv::backend(xv::Device::cuda(0));
    ADD_FAILURE() << "backend(cuda:0) without a GPU must throw";
  } catch (const xv::Error& e) {
    EXPECT_TRUE(has(e.what(), "cuda:0")) << e.what();
  }
  EXPECT_THROW(xv::Tensor({4}, xv::DType::F32, xv::Device::cuda(0)), xv::Error);
}

TEST(CudaHost, CudaErrorsThrowNamingTheCallAndLine) {
  try {
    XV_CUDA_CHECK(cudaSetDevice(1 << 20));  // no such device, on any machine
    ADD_FAILURE() << "XV_CUDA_CHECK did not throw";
  } catch (const xv::Error& e) {
    EXPECT_TRUE(has(e.what(), "cudaSetDevice")) << e.what();
    EXPECT_TRUE(has(e.what(), "test_cuda_host.cpp:")) << e.what();
  }
}

// cublaslt_lazy.cpp forwards to the library it dlopens on first use.
TEST(CudaHost, CublasLtIsLoadedOnFirstUse) {
  EXPECT_EQ(std::string(cublasLtGetStatusName(CUBLAS_STATUS_SUCCESS)), "CUBLAS_STATUS_SUCCESS");
  EXPECT_FALSE(std::string(cublasLtGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED)).empty());
}

}  // namespace
