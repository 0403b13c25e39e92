// Branch-free exp and erf in f32 that the compiler vectorises (libm's calls block vectorisation unless
// -ffast-math). Accuracy: exp within 2 ulp over [-87, 88] (Cody-Waite reduction, degree-6 polynomial);
// erf within 2e-7 absolute (Numerical Recipes' erfc Chebyshev fit, fractional error < 1.2e-7).
// tests/test_ops.cpp checks both against libm.
#pragma once
#include <cstdint>
#include <cstring>

namespace xv::cpu::vec {

inline float exp(float x) {
  // NaN propagates; below the smallest normal result gives 0; the polynomial runs on a clamped x so that
  // the float-to-int conversion is always defined.
  const float in = x;
  const float keep = x < -87.33654f ? 0.0f : 1.0f;
  x = x < -87.33654f ? -87.33654f : (x > 88.72283f ? 88.72283f : x);
  x = x != x ? 0.0f : x;
  // Round to nearest even by adding and removing 1.5 * 2^23 (|x log2 e| < 2^22 here); vectorises, unlike
  // the rounding builtins.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;        // ln2 split high/low for an exact first subtraction
  r = r - n * -2.12194440e-4f;
  // exp(r) on [-ln2/2, ln2/2]: 1 + r + r^2 (1/2 + r (1/6 + r (1/24 + r (1/120 + r/720)))) (Cephes coefficients)
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  // Scale by 2^n through the exponent bits; n is in [-126, 128], 2^128 is split in two factors.
  const int32_t ni = int32_t(n);
  const int32_t n1 = ni > 127 ? 127 : ni;
  uint32_t b1 = uint32_t(n1 + 127) << 23, b2 = uint32_t(ni - n1 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, 4);
  std::memcpy(&s2, &b2, 4);
  const float out = e * s1 * s2 * keep;
  return in != in ? in : out;
}

inline float erf(float x) {
  const float z = x < 0.0f ? -x : x;
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float erfc = t * vec::exp(-z * z + p);
  const float r = 1.0f - erfc;
  return x < 0.0f ? -r : r;
}

}  // namespace xv::cpu::vec
