// A dense, row-major, owning f32 tensor for the CPU path: fp32 compute on the CPU.
// Weights of other dtypes are converted to f32 on load. Shapes are small vectors; the data is a
// contiguous std::vector<float>.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"

namespace xv {

using Shape = std::vector<int64_t>;

inline int64_t shape_numel(const Shape& s) {
  return std::accumulate(s.begin(), s.end(), int64_t{1}, [](int64_t a, int64_t b) { return a * b; });
}
std::string shape_str(const Shape& s);

struct Tensor {
  Shape shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(Shape s, float fill = 0.0f) : shape(std::move(s)), data(size_t(shape_numel(shape)), fill) {}

  int64_t numel() const { return int64_t(data.size()); }
  int64_t dim(int i) const { return shape.at(size_t(i < 0 ? int(shape.size()) + i : i)); }
  int ndim() const { return int(shape.size()); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  bool empty() const { return data.empty(); }
  // A shape without its data: a weight whose values are read later (WeightStore::set_shapes_only, the frozen
  // base of a sharded run, parallel/fsdp.h), or emptied between uses.
  bool shape_only() const { return data.empty() && !shape.empty() && shape_numel(shape) > 0; }
  // Reinterprets the shape; the element count must not change.
  void reshape(Shape s) {
    const int64_t n = shape_only() ? shape_numel(shape) : numel();
    XV_CHECK(shape_numel(s) == n, "reshape: {} elements cannot take shape {}", n, shape_str(s));
    shape = std::move(s);
  }
};

// Concatenates tensors along dim 0 (used to fuse q/k/v weights into one GEMM at load time); of shape-only
// tensors, a shape-only tensor.
Tensor concat_rows(const std::vector<Tensor>& parts);

}  // namespace xv
