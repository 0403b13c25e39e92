#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace xv {

namespace {
struct DTypeInfo {
  DType t;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kInfo[] = {
    {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2}, {DType::F64, "F64", 8},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2},   {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1}, {DType::U64, "U64", 8},
};
}  // namespace

size_t dtype_size(DType t) { return kInfo[int(t)].size; }
std::string_view dtype_name(DType t) { return kInfo[int(t)].name; }

bool dtype_from_name(std::string_view s, DType* out) {
  for (const auto& i : kInfo)
    if (s == i.name) {
      *out = i.t;
      return true;
    }
  return false;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      u = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // overflow (>= 65520 rounds to inf) and inf
  if (a < 0x38800000u) {                        // below the smallest normal 2^-14: subnormal or zero
    // value = a as float; subnormal unit is 2^-24. Round to nearest even of value / 2^-24.
    float v;
    std::memcpy(&v, &a, 4);
    float scaled = v * 16777216.0f;  // exact (power of two)
    float r = std::nearbyint(scaled);  // default rounding mode: to nearest, ties to even
    return sign | uint16_t(r);
  }
  uint32_t exp = ((a >> 23) - 127 + 15);
  uint32_t man = a & 0x7fffffu;
  uint32_t h = (exp << 10) | (man >> 13);
  uint32_t rest = man & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // carries into the exponent correctly
  return sign | uint16_t(h);
}

namespace {
// Element i of an array of T at a possibly unaligned address (safetensors offsets need not be aligned).
template <typename T>
inline T load(const void* src, size_t i) {
  T v;
  std::memcpy(&v, static_cast<const char*>(src) + i * sizeof(T), sizeof(T));
  return v;
}
}  // namespace

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load<uint16_t>(src, i));
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load<uint16_t>(src, i));
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<double>(src, i));
      return;
    case DType::I64:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<int64_t>(src, i));
      return;
    case DType::I32:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<int32_t>(src, i));
      return;
    case DType::I16:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<int16_t>(src, i));
      return;
    case DType::I8:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<int8_t>(src, i));
      return;
    case DType::U64:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<uint64_t>(src, i));
      return;
    case DType::U8:
    case DType::BOOL:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<uint8_t>(src, i));
      return;
  }
  fail("convert_to_f32: unknown dtype {}", int(t));
}

}  // namespace xv
