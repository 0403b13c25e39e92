// A window of a tensor's storage that the ops take (kernels/ops.h): `rows` x `cols` elements of `dtype` on
// `device`, row-major, rows `stride` elements apart (flash-attention's explicit strides: the q, k, v column
// blocks of one fused qkv buffer are three views of it). Views do not own memory; they are made by Tensor
// (view, rows, cols, flat) and are valid while that tensor's storage is.
#pragma once
#include <cstdint>
#include <type_traits>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace xv {

// The dtype a C++ element type stands for in raw access (uint16_t: BF16 or F16).
template <class T>
constexpr bool dtype_holds(DType t) {
  using U = std::remove_const_t<T>;
  if constexpr (std::is_same_v<U, float>) return t == DType::F32;
  else if constexpr (std::is_same_v<U, double>) return t == DType::F64;
  else if constexpr (std::is_same_v<U, uint16_t>) return t == DType::BF16 || t == DType::F16 || t == DType::I16;
  else if constexpr (std::is_same_v<U, int32_t>) return t == DType::I32;
  else if constexpr (std::is_same_v<U, int64_t>) return t == DType::I64;
  else if constexpr (std::is_same_v<U, uint64_t>) return t == DType::U64;
  else if constexpr (std::is_same_v<U, uint8_t>) return t == DType::U8 || t == DType::BOOL || t == DType::I8;
  else if constexpr (std::is_same_v<U, void>) return true;
  else return false;
}

struct View {
  void* ptr = nullptr;
  DType dtype = DType::F32;
  Device device{};
  int64_t rows = 0, cols = 0, stride = 0;  // stride: elements between row starts
  bool present = false;                    // false: an absent optional operand (View{})

  int64_t numel() const { return rows * cols; }
  bool contiguous() const { return rows <= 1 || stride == cols; }
  bool same_shape(const View& o) const { return rows == o.rows && cols == o.cols; }
  // Rows [r0, r0 + n) and columns [c0, c0 + n): checked against this view.
  View row_range(int64_t r0, int64_t n) const {
    XV_CHECK(present && r0 >= 0 && n >= 0 && r0 + n <= rows, "view: rows [{}, {}) of a view of {} rows", r0, r0 + n,
             rows);
    View v = *this;
    if (ptr) v.ptr = static_cast<char*>(ptr) + size_t(r0 * stride) * dtype_size(dtype);  // no storage: stays null
    v.rows = n;
    return v;
  }
  View col_range(int64_t c0, int64_t n) const {
    XV_CHECK(present && c0 >= 0 && n >= 0 && c0 + n <= cols, "view: columns [{}, {}) of a view of {} columns", c0,
             c0 + n, cols);
    View v = *this;
    if (ptr) v.ptr = static_cast<char*>(ptr) + size_t(c0) * dtype_size(dtype);
    v.cols = n;
    return v;
  }
};

}  // namespace xv
