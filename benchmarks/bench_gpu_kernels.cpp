// The CUDA kernels against their peers and ceilings, one table (benchmarks/gpu/check.sh runs it on a GPU
// machine; benchmarks/gpu/peer_sdpa.py times the attention peer, PyTorch's cuDNN and flash SDPA, on the same
// shapes, and check.sh prints the ratios):
//   attention   forward and forward+backward, bf16, at Phi-3 (32 heads of 96, causal) and CLIP-L (16 heads of
//               64, T = 577, bidirectional) shapes: TFLOP/s (forward 4 B H T^2 D flops, halved when causal;
//               backward 2.5 times the forward);
//   lora        linear + lora_forward against linear alone (the cuBLASLt base GEMM) at Phi-3's qkv, o, gate_up
//               and down shapes, r 8 and 16: the ratio of times (target: within 10%);
//   memory      distill_loss, rmsnorm, layernorm, adamw_update against the device-to-device copy bandwidth
//               measured here (bytes read + written over time): GB/s and the fraction of the copy's.
// Every time is the median of `reps` runs after warm-up, the device synchronized around each. Without a GPU it
// says so and exits 0.
//   bench_gpu_kernels [--json FILE] [--quick]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/backend.h"
#include "kernels/ops.h"

namespace {

using xv::Device;
using xv::DType;
using xv::Tensor;
namespace ops = xv::ops;

Device gpu() { return Device::cuda(0); }

Tensor rand_t(int64_t rows, int64_t cols, DType t, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(size_t(rows * cols));
  for (float& x : v) x = u(g);
  return Tensor::from_vector({rows, cols}, v, t, gpu());
}

// Median seconds of f over reps runs (after warm runs), the device synchronized before and after each.
double time_median(const std::function<void()>& f, int warm, int reps) {
  xv::Backend& be = xv::backend(gpu());
  for (int i = 0; i < warm; ++i) f();
  be.synchronize();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    be.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    be.synchronize();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Row {
  std::string group, name, unit;
  double value = 0, ref = 0;  // ref: the ceiling or the base (0: none)
  std::string ref_name;
};

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) o += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) json = argv[++i];
    else if (a == "--quick") quick = true;
    else {
      std::fprintf(stderr, "bench_gpu_kernels: unknown argument '%s' (usage: [--json FILE] [--quick])\n", a.c_str());
      return 2;
    }
  }
  if (xv::cuda_device_count() == 0) {
    std::printf("bench_gpu_kernels: no CUDA device (%s): nothing measured\n",
                xv::cuda_compiled() ? "no GPU or driver" : "this build has no CUDA backend");
    return 0;
  }
  xv::Backend& be = xv::backend(gpu());
  std::printf("device: %s\n", be.name().c_str());
  const int warm = 3, reps = quick ? 5 : 20;
  std::vector<Row> rows;

  // ---- Copy bandwidth: the memory-bound ceiling ------------------------------------------------------------
  double copy_gbs = 0;
  {
    const int64_t n = int64_t(1) << 28;  // 512 MiB of bf16 each way
    Tensor a = rand_t(n / 4096, 4096, DType::BF16, 1), b({n / 4096, 4096}, DType::BF16, gpu());
    const double t = time_median([&] { ops::copy(a, b); }, warm, reps);
    copy_gbs = 2.0 * double(n) * 2.0 / t / 1e9;
    rows.push_back({"memory", "device copy (ceiling)", "GB/s", copy_gbs, 0, ""});
  }

  // ---- Attention -------------------------------------------------------------------------------------------
  struct AttnShape {
    const char* name;
    int64_t B, T, H, D;
    bool causal;
  };
  std::vector<AttnShape> shapes = {{"phi3 T=577", 4, 577, 32, 96, true},   {"phi3 T=1024", 2, 1024, 32, 96, true},
                                   {"phi3 T=2048", 1, 2048, 32, 96, true}, {"phi3 T=4096", 1, 4096, 32, 96, true},
                                   {"clip-l T=577", 8, 577, 16, 64, false}};
  if (quick) shapes.resize(2);
  for (const AttnShape& s : shapes) {
    const int64_t R = s.B * s.T, C = s.H * s.D;
    Tensor q = rand_t(R, C, DType::BF16, 2), k = rand_t(R, C, DType::BF16, 3), v = rand_t(R, C, DType::BF16, 4);
    Tensor o({R, C}, DType::BF16, gpu()), lse({s.B * s.H, s.T}, DType::F32, gpu());
    Tensor dout = rand_t(R, C, DType::BF16, 5), dq({R, C}, DType::BF16, gpu()), dk({R, C}, DType::BF16, gpu()),
           dv({R, C}, DType::BF16, gpu());
    ops::AttentionParams p;
    p.q = q, p.k = k, p.v = v, p.o = o, p.lse = lse;
    p.B = s.B, p.T = s.T, p.Hq = s.H, p.Hkv = s.H, p.D = s.D, p.causal = s.causal;
    p.scale = 1.0f / std::sqrt(float(s.D));
    const double fwd_flops = 4.0 * double(s.B * s.H) * double(s.T) * double(s.T) * double(s.D) * (s.causal ? 0.5 : 1.0);
    const double tf = time_median([&] { ops::attention(p); }, warm, reps);
    rows.push_back({"attention", std::string(s.name) + " fwd", "TFLOP/s", fwd_flops / tf / 1e12, 0, ""});
    for (bool det : {true, false}) {
      ops::AttentionBackwardParams bp;
      bp.fwd = p, bp.dout = dout, bp.dq = dq, bp.dk = dk, bp.dv = dv, bp.deterministic = det;
      const double tb = time_median([&] {
        ops::attention(p);
        ops::attention_backward(bp);
      }, warm, reps);
      rows.push_back({"attention", std::string(s.name) + (det ? " fwd+bwd (deterministic)" : " fwd+bwd (fast)"),
                      "TFLOP/s", 3.5 * fwd_flops / tb / 1e12, 0, ""});
    }
  }

  // ---- LoRA against the base GEMM --------------------------------------------------------------------------
  struct LinShape {
    const char* name;
    int64_t K, N;
  };
  const int64_t M = quick ? 2048 : 6056;  // 8 pairs x 757 image-and-text tokens
  for (const LinShape& s : {LinShape{"qkv", 3072, 9216}, {"o", 3072, 3072}, {"gate_up", 3072, 16384},
                            {"down", 8192, 3072}}) {
    Tensor x = rand_t(M, s.K, DType::BF16, 6), W = rand_t(s.N, s.K, DType::BF16, 7, -0.02f, 0.02f);
    Tensor y({M, s.N}, DType::BF16, gpu());
    const double tbase = time_median([&] { ops::linear(x, W, xv::View{}, y); }, warm, reps);
    rows.push_back({"lora", std::string(s.name) + " base GEMM", "TFLOP/s",
                    2.0 * double(M) * double(s.N) * double(s.K) / tbase / 1e12, 0, ""});
    for (int64_t r : {int64_t(8), int64_t(16)}) {
      Tensor A = rand_t(r, s.K, DType::BF16, 8, -0.02f, 0.02f), B = rand_t(s.N, r, DType::BF16, 9, -0.02f, 0.02f);
      Tensor xa({M, r}, DType::BF16, gpu());
      const double tl = time_median([&] {
        ops::linear(x, W, xv::View{}, y);
        ops::lora_forward(x, A, B, 2.0f, 0, 0.0f, y, xa);
      }, warm, reps);
      rows.push_back({"lora", std::string(s.name) + " base + LoRA r=" + std::to_string(r), "x base", tl / tbase, 1.1,
                      "target"});
    }
  }

  // ---- Memory-bound kernels --------------------------------------------------------------------------------
  {
    const int64_t rws = quick ? 8192 : 32768, C = 3072;
    Tensor x = rand_t(rws, C, DType::BF16, 10), g = rand_t(1, C, DType::BF16, 11), b = rand_t(1, C, DType::BF16, 12);
    Tensor y({rws, C}, DType::BF16, gpu());
    const double bytes = 2.0 * 2.0 * double(rws * C);
    const double tr = time_median([&] { ops::rmsnorm(x, g, y, 1e-5f); }, warm, reps);
    rows.push_back({"memory", "rmsnorm bf16 (32768 x 3072)", "GB/s", bytes / tr / 1e9, copy_gbs, "copy"});
    const double tl = time_median([&] { ops::layernorm(x, g, b, y, 1e-5f); }, warm, reps);
    rows.push_back({"memory", "layernorm bf16 (32768 x 3072)", "GB/s", bytes / tl / 1e9, copy_gbs, "copy"});
  }
  {
    const int64_t n = quick ? (int64_t(1) << 22) : (int64_t(1) << 25);
    Tensor p = rand_t(n / 1024, 1024, DType::F32, 13), gr = rand_t(n / 1024, 1024, DType::F32, 14);
    Tensor m({n / 1024, 1024}, DType::F32, gpu()), v({n / 1024, 1024}, DType::F32, gpu());
    ops::AdamWParams cfg;
    const double t = time_median([&] { ops::adamw_update(p, gr, m, v, 1e-4f, 1, cfg); }, warm, reps);
    rows.push_back({"memory", "adamw_update f32 (32 M)", "GB/s", 7.0 * 4.0 * double(n) / t / 1e9, copy_gbs, "copy"});
  }
  {
    const int64_t B = quick ? 1024 : 16384, C = 3072;
    Tensor se = rand_t(B, C, DType::F32, 15), sx = rand_t(B, C, DType::F32, 16), t = rand_t(B, C, DType::F32, 17);
    Tensor de({B, C}, DType::F32, gpu()), dx({B, C}, DType::F32, gpu());
    const double tt = time_median([&] { ops::distill_loss(se, sx, t, 0.5f, de, dx); }, warm, reps);
    rows.push_back({"memory", "distill_loss f32 (16384 x 3072)", "GB/s", 7.0 * 4.0 * double(B * C) / tt / 1e9, copy_gbs,
                    "copy"});
  }

  std::printf("\n| group | kernel | value | unit | vs |\n|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::string vs = "";
    if (r.ref > 0 && r.ref_name == "copy") vs = std::to_string(int(std::lround(100.0 * r.value / r.ref))) + "% of copy";
    if (r.ref_name == "target") vs = r.value <= r.ref ? "within 10%" : "over 10%";
    std::printf("| %s | %s | %.3f | %s | %s |\n", r.group.c_str(), r.name.c_str(), r.value, r.unit.c_str(), vs.c_str());
  }
  if (!json.empty()) {
    std::ofstream f(json);
    f << "{\"device\": \"" << json_escape(be.name()) << "\", \"rows\": [";
    for (size_t i = 0; i < rows.size(); ++i)
      f << (i ? ", " : "") << "{\"group\": \"" << rows[i].group << "\", \"name\": \"" << json_escape(rows[i].name)
        << "\", \"value\": " << rows[i].value << ", \"unit\": \"" << rows[i].unit << "\"}";
    f << "]}\n";
    if (!f) {
      std::fprintf(stderr, "bench_gpu_kernels: cannot write %s\n", json.c_str());
      return 1;
    }
  }
  return 0;
}
