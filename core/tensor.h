// A dense, row-major tensor that knows where it lives: its dtype (f32, bf16, f16, integer types), its device
// (cpu or cuda:N) and its storage, allocated through that device's memory (core/storage.h). Copying a
// tensor copies its elements (on its device); moving it moves the storage.
//
// Nothing outside a backend or a file format touches the elements: models call ops (kernels/ops.h) on views
// of their tensors. The raw accessors are typed and checked (data<T>() against the dtype; at()/set() against
// the bounds and the host), and there is no public vector of elements.
//
// A tensor may be shape-only: a layout without storage (a frozen weight held elsewhere between uses by a
// sharding wrapper, parallel/fsdp.h, or read later from a checkpoint).
#pragma once
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/storage.h"
#include "core/view.h"

namespace xv {

using Shape = std::vector<int64_t>;

inline int64_t shape_numel(const Shape& s) {
  return std::accumulate(s.begin(), s.end(), int64_t{1}, [](int64_t a, int64_t b) { return a * b; });
}
std::string shape_str(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled.
  explicit Tensor(Shape s, DType t = DType::F32, Device d = Device::cpu());
  Tensor(const Tensor& o);
  Tensor& operator=(const Tensor& o);
  Tensor(Tensor&& o) noexcept;
  Tensor& operator=(Tensor&& o) noexcept;

  // A layout without storage.
  static Tensor shape_only(Shape s, DType t = DType::F32, Device d = Device::cpu());
  // From host values: f32 values stored as `t` (F32, BF16 or F16; rounding to nearest even), or int32 ids.
  static Tensor from_host(Shape s, const float* src, DType t = DType::F32, Device d = Device::cpu());
  static Tensor from_host(Shape s, const int32_t* src, Device d = Device::cpu());
  static Tensor from_vector(Shape s, const std::vector<float>& v, DType t = DType::F32, Device d = Device::cpu());
  static Tensor from_vector(Shape s, const std::vector<int32_t>& v, Device d = Device::cpu());
  // A 1-D I32 tensor of row indices (the ops' gather and scatter lists).
  static Tensor indices(const std::vector<int32_t>& v, Device d = Device::cpu()) {
    return from_vector({int64_t(v.size())}, v, d);
  }
  // From raw host bytes already in dtype t (a file's tensor); `bytes` must be numel * dtype size.
  static Tensor from_bytes(Shape s, DType t, const void* src, size_t bytes, Device d = Device::cpu());
  // Every element v (F32, BF16 or F16).
  static Tensor filled(Shape s, float v, DType t = DType::F32, Device d = Device::cpu());
  // Zeros of this tensor's shape, dtype and device.
  Tensor zeros_like() const { return Tensor(shape_, dtype_, device_); }

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const;  // negative counts from the end
  int ndim() const { return int(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  // No elements to read: default-constructed (shape [0]), moved-from, released, shape-only or zero-sized.
  bool empty() const { return !storage_ || numel() == 0; }
  // A shape with elements but no storage.
  bool shape_only() const { return !storage_ && !shape_.empty() && numel() > 0; }
  // Reinterprets the shape; the element count must not change.
  void reshape(Shape s);
  // Frees the storage and keeps the layout: the tensor becomes shape-only (a no-op on one already so).
  void release();

  // A copy on another device (the same tensor's copy when already there; a temporary already there is moved:
  // `std::move(t).to(d)`).
  Tensor to(Device d) const&;
  Tensor to(Device d) &&;
  // A tensor sharing this one's storage: `s` elements from element `offset` on (in place of copying a
  // gathered flat buffer into each of its tensors, parallel/fsdp.h). Writes through either are seen by both.
  Tensor alias(int64_t offset, Shape s) const;
  // A copy in another dtype, on the host (F32, BF16 or F16; rounding to nearest even). Device tensors are
  // cast with ops::cast.
  Tensor to_dtype(DType t) const;

  // Raw, typed access for backends and file formats: T must be the dtype's element type (dtype_holds).
  template <class T>
  T* data() {
    check_raw(dtype_holds<T>(dtype_));
    return static_cast<T*>(raw());
  }
  template <class T>
  const T* data() const {
    check_raw(dtype_holds<T>(dtype_));
    return static_cast<const T*>(raw());
  }
  void* raw() { return storage_ ? static_cast<char*>(storage_->data()) + offset_ : nullptr; }
  const void* raw() const { return storage_ ? static_cast<const char*>(storage_->data()) + offset_ : nullptr; }

  // Checked host element access (tests, file formats, reports): the index is checked against numel, the tensor
  // must live on the host; floating dtypes read and written as f32 (bf16/f16 rounding to nearest even),
  // integer dtypes by value.
  float at(int64_t i) const;
  void set(int64_t i, float v);
  // Every element as f32 on the host, copied from the device when the tensor lives elsewhere.
  std::vector<float> to_vector() const;
  std::vector<int32_t> to_i32_vector() const;  // I32 tensors

  // Views for the ops (core/view.h): the whole tensor as (numel / last dim, last dim); one row of numel; rows
  // [r0, r0 + n) or columns [c0, c0 + n) of the 2-D view. A tensor without storage gives a view whose ptr is
  // null (the ops check it).
  View view() const;
  View flat() const;
  View rows(int64_t r0, int64_t n) const { return view().row_range(r0, n); }
  View cols(int64_t c0, int64_t n) const { return view().col_range(c0, n); }
  operator View() const { return view(); }  // NOLINT: a tensor is passed to an op as its whole view

 private:
  void check_raw(bool ok) const;
  Shape shape_{0};  // a default (or moved-from) tensor has no elements
  DType dtype_ = DType::F32;
  Device device_{};
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes into storage_ (aliases)
};

// Concatenates tensors along dim 0 (fusing q/k/v weights into one GEMM at load time), on the host; of
// shape-only tensors, a shape-only tensor. All parts share the dtype.
Tensor concat_rows(const std::vector<Tensor>& parts);

}  // namespace xv
