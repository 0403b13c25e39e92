// LoRA adapters as PEFT defines them for nn.Linear:
//   y = base(x) + scaling * B(A(dropout(x))),  A (r, in), B (out, r),
//   scaling = alpha / r, or alpha / sqrt(r) with rsLoRA.
// PEFT's initialisation: A Kaiming-uniform (a = sqrt 5, i.e. U(-1/sqrt(in), 1/sqrt(in))) or Gaussian
// N(0, 1/r); B zeros. Adapters off gives the teacher. Tensor names follow PEFT's adapter files:
// "base_model.model.<module path>.lora_A.weight".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace xv {

struct LoraConfig {
  int64_t r = 8;
  float alpha = 16.0f;
  float dropout = 0.0f;
  bool rslora = false;
  std::string init = "kaiming";  // "kaiming" (PEFT's default) or "gaussian"
  std::vector<std::string> targets = {"query", "value"};
  float scaling() const;
  // PEFT's matching of target_modules: the module path equals a target or ends with "." + target.
  bool targets_module(const std::string& module_path) const;
};

struct LoraAdapter {
  std::string module;  // e.g. "encoder.layer.0.attention.self.query"
  int64_t in = 0, out = 0, r = 0;
  float scaling = 1.0f;
  float dropout = 0.0f;  // on the adapter's input, training only
  Tensor A, B;    // (r, in), (out, r)
  Tensor dA, dB;  // gradients, accumulated by backward

  std::string a_name() const { return "base_model.model." + module + ".lora_A.weight"; }
  std::string b_name() const { return "base_model.model." + module + ".lora_B.weight"; }
  void zero_grad();
};

// On device d: A initialised as PEFT does (a splitmix64 stream from `seed`), B and the gradients zero.
LoraAdapter make_lora(const std::string& module, int64_t in, int64_t out, const LoraConfig& cfg, uint64_t seed,
                      Device d = Device::cpu());

// The dropout seed of one forward pass; each adapter derives its own mask stream from it. seed 0: no
// dropout (evaluation, the teacher). Masks are a pure function of (seed, adapter, element): deterministic
// for any thread count, and recomputed rather than stored in backward.
struct LoraRun {
  uint64_t seed = 0;
  uint64_t for_adapter(int64_t index) const { return seed ? seed * 0x9e3779b97f4a7c15ull + uint64_t(index) + 1 : 0; }
};

// y (M, out; a view, e.g. a column block of a fused qkv output) += scaling * (dropout(x) A^T) B^T for x
// (M, in), through ops::lora_forward. Keeps xa (M, r) on x's device for the backward pass; the dropout mask is
// recomputed there from the seed, never stored.
void lora_forward(const LoraAdapter& a, const View& x, const View& y, uint64_t dropout_seed, Tensor* xa);
// Given dy (M, out; a view): dA, dB accumulate; dx (M, in) += the input gradient through the same dropout
// mask (absent: not needed). xa: as the forward kept it.
void lora_backward(LoraAdapter& a, const View& x, const Tensor& xa, uint64_t dropout_seed, const View& dy,
                   const View& dx);

}  // namespace xv
