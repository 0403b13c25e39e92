// CPU kernel benchmarks (Google Benchmark): GEMM through OpenBLAS, attention, norms, at the shapes the
// two backbones use. Run: build/benchmarks/bench_kernels [--benchmark_filter=...]
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

// y (M, N) = x (M, K) W^T: args M, K, N. MiniLM QKV (tokens x 384 -> 1152), Phi-3 qkv (3072 -> 9216).
void BM_Linear(benchmark::State& st) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  auto x = randv(size_t(M * K)), w = randv(size_t(N * K)), b = randv(size_t(N));
  std::vector<float> y(size_t(M * N));
  for (auto _ : st) {
    xv::ops::linear(x.data(), w.data(), b.data(), y.data(), M, K, N);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Linear)->Args({1024, 384, 1152})->Args({1024, 384, 1536})->Args({512, 3072, 9216})->Unit(benchmark::kMillisecond);

// Attention: args B, T, H, D, causal.
void BM_Attention(benchmark::State& st) {
  const int64_t B = st.range(0), T = st.range(1), H = st.range(2), D = st.range(3);
  auto qkv = randv(size_t(B * T * 3 * H * D));
  std::vector<float> o(size_t(B * T * H * D)), mask(size_t(B * T), 1.0f);
  xv::ops::AttentionParams p;
  p.q = qkv.data(), p.k = qkv.data() + H * D, p.v = qkv.data() + 2 * H * D, p.o = o.data();
  p.q_stride = p.k_stride = p.v_stride = 3 * H * D, p.o_stride = H * D;
  p.B = B, p.T = T, p.Hq = H, p.Hkv = H, p.D = D;
  p.key_mask = mask.data();
  p.causal = st.range(4) != 0;
  p.scale = 1.0f / std::sqrt(float(D));
  for (auto _ : st) {
    xv::ops::attention(p);
    benchmark::DoNotOptimize(o.data());
  }
  const double flops = 4.0 * B * H * T * T * D / (p.causal ? 2.0 : 1.0);
  st.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Attention)->Args({32, 32, 12, 32, 0})->Args({5, 577, 16, 64, 0})->Args({1, 1024, 32, 96, 1})->Unit(benchmark::kMillisecond);

// Norms: args rows, C.
void BM_LayerNorm(benchmark::State& st) {
  const int64_t R = st.range(0), C = st.range(1);
  auto x = randv(size_t(R * C)), g = randv(size_t(C)), b = randv(size_t(C));
  std::vector<float> y(x.size());
  for (auto _ : st) {
    xv::ops::layernorm(x.data(), g.data(), b.data(), y.data(), R, C, 1e-12f);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * R * C * 8);
}
BENCHMARK(BM_LayerNorm)->Args({1024, 384})->Args({2048, 1024});

void BM_RmsNorm(benchmark::State& st) {
  const int64_t R = st.range(0), C = st.range(1);
  auto x = randv(size_t(R * C)), g = randv(size_t(C));
  std::vector<float> y(x.size());
  for (auto _ : st) {
    xv::ops::rmsnorm(x.data(), g.data(), y.data(), R, C, 1e-5f);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * R * C * 8);
}
BENCHMARK(BM_RmsNorm)->Args({1024, 3072});

}  // namespace

int main(int argc, char** argv) {
  xv::ops::select_blas_core(argc, argv);
  benchmark::AddCustomContext("blas_core", xv::ops::blas_core_name());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
