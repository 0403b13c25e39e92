// Element types and conversions. bf16 and f16 are stored as uint16_t; conversions from f32 round to
// nearest, ties to even, as PyTorch does; NaN stays NaN.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace xv {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL, U64 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);         // safetensors spelling: "F32", "BF16", ...
bool dtype_from_name(std::string_view s, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                             // round to nearest even
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of type `t` at `src` to f32 at `dst`. Integer types convert by value.
void convert_to_f32(DType t, const void* src, float* dst, size_t n);

}  // namespace xv
