// CPU kernel benchmarks (Google Benchmark) through the op set (kernels/ops.h, the cpu backend): GEMM through
// OpenBLAS, attention, norms, at the shapes the two backbones use. Run: build/benchmarks/bench_kernels [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/blas_core.h"
#include "kernels/ops.h"

namespace {

std::vector<float> randv(size_t n) {
  std::mt19937 g(42);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// A tensor of normal values (fixed seed) on the host.
xv::Tensor T(const xv::Shape& s) { return xv::Tensor::from_vector(s, randv(size_t(xv::shape_numel(s)))); }

// y (M, N) = x (M, K) W^T: args M, K, N. MiniLM QKV (tokens x 384 -> 1152), Phi-3 qkv (3072 -> 9216).
void BM_Linear(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  const xv::Tensor x = T({M, K}), w = T({N, K}), b = T({N});
  xv::Tensor y({M, N});
  for (auto _ : st) {
    xv::ops::linear(x, w, b, y);
    benchmark::DoNotOptimize(y.raw());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Linear)->Args({1024, 384, 1152})->Args({1024, 384, 1536})->Args({512, 3072, 9216})->Unit(benchmark::kMillisecond);

// Attention: args B, T, H, D, causal.
void BM_Attention(benchmark::State& st) {
  const int64_t B = st.range(0), S = st.range(1), H = st.range(2), D = st.range(3);
  const xv::Tensor qkv = T({B * S, 3 * H * D}), mask = xv::Tensor::filled({B, S}, 1.0f);
  xv::Tensor o({B * S, H * D});
  xv::ops::AttentionParams p;
  p.q = qkv.cols(0, H * D), p.k = qkv.cols(H * D, H * D), p.v = qkv.cols(2 * H * D, H * D), p.o = o;
  p.B = B, p.T = S, p.Hq = H, p.Hkv = H, p.D = D;
  p.key_mask = mask;
  p.causal = st.range(4) != 0;
  p.scale = 1.0f / std::sqrt(float(D));
  for (auto _ : st) {
    xv::ops::attention(p);
    benchmark::DoNotOptimize(o.raw());
  }
  const double flops = 4.0 * B * H * S * S * D / (p.causal ? 2.0 : 1.0);
  st.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Attention)->Args({32, 32, 12, 32, 0})->Args({5, 577, 16, 64, 0})->Args({1, 1024, 32, 96, 1})->Unit(benchmark::kMillisecond);

// Norms: args rows, C.
void BM_LayerNorm(benchmark::State& st) {
  const int64_t R = st.range(0), C = st.range(1);
  const xv::Tensor x = T({R, C}), g = T({C}), b = T({C});
  xv::Tensor y({R, C});
  for (auto _ : st) {
    xv::ops::layernorm(x, g, b, y, 1e-12f);
    benchmark::DoNotOptimize(y.raw());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * R * C * 8);
}
BENCHMARK(BM_LayerNorm)->Args({1024, 384})->Args({2048, 1024});

void BM_RmsNorm(benchmark::State& st) {
  const int64_t R = st.range(0), C = st.range(1);
  const xv::Tensor x = T({R, C}), g = T({C});
  xv::Tensor y({R, C});
  for (auto _ : st) {
    xv::ops::rmsnorm(x, g, y, 1e-5f);
    benchmark::DoNotOptimize(y.raw());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * R * C * 8);
}
BENCHMARK(BM_RmsNorm)->Args({1024, 3072});

}  // namespace

int main(int argc, char** argv) {
  xv::cpu::select_blas_core(argc, argv);
  benchmark::AddCustomContext("blas_core", xv::cpu::blas_core_name());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
